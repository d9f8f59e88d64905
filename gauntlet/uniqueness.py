"""Uniqueness: proof that a peer computed on its own data, and copy detection.

Two signals (GAUNTLET.md "Uniqueness"):
- the indicator ``b = +1 if r_own > s else -1`` and its moving average ``B``: a copied, generic
  or stale update gains nothing on the peer's own pages, so ``B`` stays near or under zero. The
  paper compares two means (`indicator`); ours (`sequential_own_test`) compares per-batch
  improvements with a confidence bound and scores more own batches while the call is close;
- pairwise overlap of the peers' top-k indices (from later Templar releases) and identical file
  contents. The later uploader of a pair is the one blamed: the first to publish is presumed the
  author, since anyone can read everyone's bucket once a file is up.

How the overlap is computed, and what it costs: the count of shared (tensor, chunk, index)
triples between peers i and j is ``(X @ X.T)[i, j]`` where ``X`` is the (P, numel) 0/1 matrix of
chosen coefficients. A dense ``X`` of the 1.2B model for 250 peers would be 300 G entries, so it
is built one block of chunks at a time: a block holds at most `max_block_elems` entries
(`default_block_elems`: 2**20 on a CPU, 2**27 on a GPU) and at most 2**24 ones per peer, each
block is one scatter and one matrix product, and the counts are summed in float64. That is exact
(products of 0/1, float32 sums of at most 2**24 ones) and costs ``P**2 * numel`` multiply-adds in
matrix products, which a GPU's matrix units do fast and a CPU does well enough for small models
(tiny LLaMA, 16 peers: about 35 ms on one core); memory stays bounded at any scale.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gauntlet.codec import Compressed

ACTIONS = ("halve", "reset", "ban", "identical")
"""From mildest to worst. "identical" implies everything a ban does: equal files have overlap 1."""
_SEVERITY = {a: i for i, a in enumerate(ACTIONS)}


def indicator(r_own: float, s: float, margin: float = 0.0) -> int:
    """+1 when the peer's update helps its own pages clearly more than random ones; else -1.

    The paper's rule is `r_own > s` (margin 0). A copied or generic update helps the copier's
    pages and random pages alike, so under that rule its b is a coin flip and B random-walks
    around 0 (std ~0.16 at ema 0.95), leaking a little score. Asking for a relative margin
    (`r_own > s + margin * |s|`, ours) makes b = -1 the usual outcome for such updates while
    honest updates, measured at 1.3-2.3x s, keep b = +1. NaN gives -1.
    """
    return 1 if r_own > s + margin * abs(s) else -1


@dataclass(frozen=True)
class OwnTest:
    """What the sequential own-data test saw and decided for one peer (the audit records it)."""

    indicator: int
    """+1, -1, or 0 (undecided at `own_max_batches`, not leaning against the peer: B decays toward 0)."""
    own_batches: int
    """Own batches the decision used: the sampled ones plus those drawn because it was close."""
    difference: float
    """mean own per-batch improvement - mean random one - margin * |s|; > 0 speaks for own data."""
    std_error: float
    """Its standard error (Welch, each side's variance floored; see `own_statistic`)."""

    @property
    def statistic(self) -> float:
        return self.difference / self.std_error if self.std_error > 0 else math.copysign(math.inf, self.difference)


def _mean_var(values: Sequence[float]) -> tuple[float, float]:
    """Mean and unbiased sample variance (0 for a single value: the floor then decides)."""
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)


def own_statistic(own: Sequence[float], rand: Sequence[float], s: float, margin: float,
                  sd_floor: float) -> tuple[float, float]:
    """(difference, standard error) of per-batch relative improvements, own minus random.

    Welch's standard error, sqrt(var_own / n_own + var_rand / n_rand), but each side's per-batch
    standard deviation is at least `sd_floor * |s|`: from 1-3 batches a sample variance is often
    near 0 by chance (two batches that happen to agree), which would make any difference look
    certain. The floor is relative because per-batch improvements scale with the step's overall
    effect |s|. Measured (benchmarks/bench_own_test.py, honest work, tiny model): the median
    per-batch sd is 0.28-0.31 |s| on own batches and 0.27-0.34 |s| on random ones, so the default
    floor is 0.3; against a floor of 0.15 it cut data cheats marked +1 from 23.5 % to 11.8 %
    (seed 0) and from 11.8 % to 0 % (seed 1), with honest work marked -1 unchanged (4.4 %, 6.7 %).
    """
    if not own or not rand:
        raise ValueError(f"the own-data test needs own and random batches, got {len(own)} and {len(rand)}")
    mean_own, var_own = _mean_var(own)
    mean_rand, var_rand = _mean_var(rand)
    floor = (sd_floor * abs(s)) ** 2
    se = math.sqrt(max(var_own, floor) / len(own) + max(var_rand, floor) / len(rand))
    return mean_own - mean_rand - margin * abs(s), se


UNDECIDED = ("zero", "sign", "negative")
"""What `sequential_own_test` gives a peer still undecided at its cap (see there)."""


def sequential_own_test(own: Sequence[float], rand: Sequence[float], s: float, draw: Callable[[], float | None], *,
                        margin: float, z: float, sd_floor: float, max_batches: int,
                        undecided: str = "zero") -> OwnTest:
    """b from per-batch improvements with a confidence bound, drawing more own batches while close.

    `own` and `rand` are the per-batch relative improvements (loss before - after) / before of
    the sampled own and random batches; `s` is the peer's gradient score. b = +1 once the lower
    bound `difference - z * se` is above 0, -1 once the upper bound is below 0; in between,
    `draw()` gives the improvement on one more of the peer's own batches (None: none left) until
    `max_batches` own batches are used. Still undecided: b = 0 (`undecided = "zero"`), the sign
    of the difference (`"sign"`), or -1 when the difference is <= 0 and 0 when above
    (`"negative"`: no sign of own-data gain counts against the peer, a sign too weak to prove
    only stops B growing; measured in benchmarks/bench_own_test.py, it keeps a data cheat's
    mean b as negative as the margin rule's). Deterministic given the same inputs and draws.
    """
    if undecided not in UNDECIDED:
        raise ValueError(f"undecided must be one of {UNDECIDED}, got {undecided!r}")
    own = list(own)
    while True:
        difference, se = own_statistic(own, rand, s, margin, sd_floor)
        if not (math.isfinite(difference) and math.isfinite(se)):
            return OwnTest(-1, len(own), difference, se)  # a NaN loss never earns +1
        if difference - z * se > 0 or difference + z * se < 0:
            return OwnTest(1 if difference > 0 else -1, len(own), difference, se)
        more = draw() if len(own) < max_batches else None
        if more is None:
            lean = 1 if difference > 0 else -1
            b = {"zero": 0, "sign": lean, "negative": min(lean, 0)}[undecided]
            return OwnTest(b, len(own), difference, se)
        own.append(more)


def draw_order(n: int, seed: int) -> list[int]:
    """0..n-1 in the fixed order the sequential test draws a peer's unsampled own batches: by
    blake2b(seed, i), so a replay (same window seed, same uid) draws the same batches."""
    def key(i: int) -> bytes:
        return hashlib.blake2b(f"gauntlet-own-extra/v1|{seed}|{i}".encode(), digest_size=16).digest()
    return sorted(range(n), key=key)



def _common_names(peers: Mapping[int, Compressed], uids: list[int]) -> list[str]:
    """The tensor names, after checking every peer has the same tensors with the same shapes."""
    names = sorted(peers[uids[0]])
    for name in names:
        shapes = {u: tuple(peers[u][name][0].shape) if name in peers[u] else None for u in uids}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"peers differ in tensors or shapes at {name!r}: {shapes}")
    extra = {u: sorted(set(peers[u]) - set(names)) for u in uids if set(peers[u]) != set(names)}
    if extra:
        raise ValueError(f"peers differ in tensors or shapes: extra tensors {extra}")
    return names


def default_block_elems(device: torch.device) -> int:
    """Measured: on a CPU a 4 MiB one-hot block that stays in cache is fastest (tiny LLaMA, 16
    peers: 34 ms at 2**20 vs 109 ms at 2**24); on a GPU, big blocks keep kernel launches few."""
    return 2**27 if device.type == "cuda" else 2**20


def _shared_counts(idx: Tensor, max_block_elems: int) -> Tensor:
    """(P, C, k) indices -> (P, P) float64 counts of coinciding (chunk, index) pairs, on idx's device."""
    n_peers, n_chunks, k = idx.shape
    counts = torch.zeros(n_peers, n_peers, dtype=torch.float64, device=idx.device)
    if idx.numel() == 0:
        return counts
    lo, hi = (int(v) for v in torch.aminmax(idx))
    if lo < 0:
        raise ValueError("negative index in a peer's top-k")
    elems = hi + 1  # the one-hot width per chunk; any width covering the indices is exact
    step = max(1, min(max_block_elems // (n_peers * elems), 2**24 // k))
    for c0 in range(0, n_chunks, step):
        block = idx[:, c0:c0 + step]  # (P, Cb, k)
        cb = block.shape[1]
        offsets = torch.arange(cb, device=idx.device).mul_(elems).view(1, cb, 1)
        onehot = torch.zeros(n_peers, cb * elems, dtype=torch.float32, device=idx.device)  # (P, Cb*E)
        onehot.scatter_(1, (block + offsets).reshape(n_peers, cb * k), 1.0)
        counts += onehot @ onehot.T  # (P, P), exact: sums of at most Cb*k ones
    return counts


def overlap_matrix(peers: Mapping[int, Compressed], *,
                   max_block_elems: int | None = None) -> tuple[list[int], Tensor]:
    """(sorted uids, (P, P) float64 on the CPU): the fraction of kept indices two peers share.

    Shared (tensor, chunk, index) triples divided by the number of kept indices per peer (the
    same for every peer whose file passed the format check); the diagonal is 1. Runs on the
    device the indices are on. See the module docstring for the method and its cost.
    """
    uids = sorted(peers)
    if not uids:
        return [], torch.zeros(0, 0, dtype=torch.float64)
    shared: Tensor | float = 0.0
    total = 0
    for name in _common_names(peers, uids):
        idx = torch.stack([peers[u][name][0].to(torch.int64) for u in uids])  # (P, C, k)
        block = max_block_elems or default_block_elems(idx.device)
        shared = shared + _shared_counts(idx, block).cpu()
        total += idx.shape[1] * idx.shape[2]
    overlap = shared / total if total else torch.zeros(len(uids), len(uids), dtype=torch.float64)
    overlap.fill_diagonal_(1.0)
    return uids, overlap


@dataclass(frozen=True)
class CopyFinding:
    uid: int
    """The peer blamed: the later uploader of the pair (each of the two, with no trusted order)."""
    partner: int
    """The peer it matched (the earlier uploader, when the order is known)."""
    overlap: float
    action: str
    """One of ACTIONS."""


def _blamed(a: int, b: int, upload_times: Mapping[int, float | None]) -> list[tuple[int, int]]:
    """[(blamed, partner)]: the later uploader, or both peers when their order is not known.

    Only a trusted time orders two uploads (None marks a time the peer's own server reported);
    equal times (S3 keeps whole seconds) order nothing either. With no trusted order the copy
    rule applies to both, as to a later uploader, and never by uid: a thief must not get the
    honest author blamed by claiming an earlier time on its own server.
    """
    ta, tb = upload_times[a], upload_times[b]
    if ta is None or tb is None or ta == tb:
        return [(a, b), (b, a)]
    return [(a, b)] if ta > tb else [(b, a)]


def _worse(new: CopyFinding, old: CopyFinding | None) -> bool:
    if old is None:
        return True
    return (_SEVERITY[new.action], new.overlap, -new.partner) > (_SEVERITY[old.action], old.overlap, -old.partner)


def _action(overlap: float, halve: float, reset: float, ban: float) -> str | None:
    if overlap >= ban:
        return "ban"
    if overlap >= reset:
        return "reset"
    if overlap >= halve:
        return "halve"
    return None


def find_copies(peers: Mapping[int, Compressed], upload_times: Mapping[int, float | None],
                content_hashes: Mapping[int, str], halve: float = 0.4, reset: float = 0.5, ban: float = 0.6,
                *, matrix: tuple[list[int], Tensor] | None = None) -> dict[int, CopyFinding]:
    """uid -> its worst finding, for the peers blamed (later uploaders); others are absent.

    Identical content hashes are copies outright ("identical"); otherwise the pair's overlap
    picks "ban", "reset" or "halve" (each threshold inclusive). `matrix` reuses an
    `overlap_matrix` result.
    """
    if not 0 <= halve <= reset <= ban <= 1:
        raise ValueError(f"thresholds must satisfy 0 <= halve <= reset <= ban <= 1, got {halve}, {reset}, {ban}")
    lacking = sorted(u for u in peers if u not in upload_times or u not in content_hashes)
    if lacking:
        raise ValueError(f"no upload time or content hash for uids {lacking}")
    uids, overlap = matrix if matrix is not None else overlap_matrix(peers)
    if sorted(uids) != sorted(peers):
        raise ValueError("the given overlap matrix is for other peers")
    found: dict[int, CopyFinding] = {}
    for i, a in enumerate(uids):
        for j in range(i + 1, len(uids)):
            b = uids[j]
            o = float(overlap[i, j])
            action = "identical" if content_hashes[a] == content_hashes[b] else _action(o, halve, reset, ban)
            if action is None:
                continue
            for later, earlier in _blamed(a, b, upload_times):
                finding = CopyFinding(later, earlier, o, action)
                if _worse(finding, found.get(later)):
                    found[later] = finding
    return found
