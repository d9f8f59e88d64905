"""Stage 2: the loss score of each peer's pseudo-gradient (GAUNTLET.md "Stage 2: loss score").

For peer k, ``theta_k = theta - eta * sign(delta_k)`` with ``eta = eval_lr_factor * lr_W``. The
live model is never touched: ``theta_k`` is written into one scratch copy of the parameters and
the model is run functionally (``torch.func.functional_call``), so scoring P peers costs one
extra copy of the weights, not P deep copies of the model (the reference deep-copied). The LM
head and the loss run a chunk of positions at a time (`gauntlet.model.causal_lm_loss_sum`).

Losses are token-weighted means: sums of per-token cross-entropy and token counts stay on the
device; the whole stage does one host transfer at the end (nanochat's evaluation habit).
``L_rand_before`` depends only on theta and the window's random batches, so with shared random
batches (ours) it is computed once per window instead of once per peer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from gauntlet.model import autocast, causal_lm_loss_sum

Batches = Sequence[Tensor]  # each (B, T) token ids


@dataclass(frozen=True)
class PeerLosses:
    uid: int
    own_before: float
    own_after: float
    rand_before: float
    rand_after: float

    @property
    def gradient_score(self) -> float:
        """s_k: relative improvement on the random data."""
        return relative_improvement(self.rand_before, self.rand_after)

    @property
    def own_improvement(self) -> float:
        """r_own: relative improvement on the peer's own data (0 if the loss before is <= 0)."""
        return relative_improvement(self.own_before, self.own_after)


def relative_improvement(before: float, after: float) -> float:
    return (before - after) / before if before > 0 else 0.0


def token_mean(sums: Sequence[Tensor] | Tensor, tokens: int) -> Tensor:
    """The token-weighted mean of per-batch float64 loss sums, added one batch at a time in batch
    order: the same additions as before per-batch losses existed, so the means (and the audit
    columns replays compare) stay bit-identical."""
    total = torch.zeros((), device=sums[0].device, dtype=torch.float64)
    for value in sums:
        total += value
    return total / tokens


class LossEvaluator:
    """Token-weighted losses of a model at theta or at a perturbed copy of theta, on one device."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.theta = {n: p.detach() for n, p in model.named_parameters()}
        self.buffers = {n: b.detach() for n, b in model.named_buffers()}
        self._scratch: dict[str, Tensor] | None = None

    def _loss_sum(self, params: Mapping[str, Tensor], batch: Tensor) -> tuple[Tensor, int]:
        batch = batch.to(self.device, non_blocking=True)
        with autocast(self.device):
            return causal_lm_loss_sum(self.model, params, self.buffers, batch)

    @torch.no_grad()
    def batch_sums(self, params: Mapping[str, Tensor], batches: Batches) -> tuple[list[Tensor], list[int]]:
        """Each batch's summed loss (0-d float64 device tensor) and token count (known on the host)."""
        if not batches:
            raise ValueError("no batches to compute losses on")
        sums, counts = zip(*(self._loss_sum(params, batch) for batch in batches))
        return [s.double() for s in sums], list(counts)

    @torch.no_grad()
    def mean_loss(self, params: Mapping[str, Tensor], batches: Batches) -> Tensor:
        """Token-weighted mean loss as a 0-d device tensor (no host sync)."""
        sums, counts = self.batch_sums(params, batches)
        return token_mean(sums, sum(counts))

    @torch.no_grad()
    def perturbed(self, delta: Mapping[str, Tensor], eta: float) -> dict[str, Tensor]:
        """theta - eta * sign(delta), written into the one scratch buffer (reused per peer)."""
        if self._scratch is None:
            self._scratch = {n: torch.empty_like(p) for n, p in self.theta.items()}
        missing = set(self.theta) - set(delta)
        if missing:
            raise ValueError(f"delta lacks parameters: {sorted(missing)[:3]}...")
        for name, out in self._scratch.items():  # one pass; eta * sign is exact, so the bits are copy-then-add's
            torch.sub(self.theta[name], torch.sign(delta[name].to(self.device)), alpha=eta, out=out)
        return self._scratch


def score_peers(evaluator: LossEvaluator, deltas: Mapping[int, Mapping[str, Tensor]],
                own_batches: Mapping[int, Batches], rand_batches: Mapping[int, Batches] | Batches,
                eta: float, rand_before: float | None = None) -> dict[int, PeerLosses]:
    """Losses before and after each peer's step; `rand_batches` shared or one set per peer.

    `deltas` may be a lazy mapping (decoded on access) so that only one peer's dense delta is
    alive at a time. With shared batches, `rand_before` (computed once for the window, when the
    peers are scored in several chunks) saves recomputing L_rand_before here.
    """
    shared = not isinstance(rand_batches, Mapping)
    theta = evaluator.theta
    rand_before_shared = None
    if shared:  # once a window
        rand_before_shared = (evaluator.mean_loss(theta, rand_batches) if rand_before is None else
                              torch.tensor(rand_before, dtype=torch.float64, device=evaluator.device))
    rows: list[Tensor] = []
    uids = sorted(deltas)
    for uid in uids:
        rand = rand_batches if shared else rand_batches[uid]
        own_before = evaluator.mean_loss(theta, own_batches[uid])
        rand_before = rand_before_shared if shared else evaluator.mean_loss(theta, rand)
        after = evaluator.perturbed(deltas[uid], eta)
        own_after = evaluator.mean_loss(after, own_batches[uid])
        rand_after = evaluator.mean_loss(after, rand)
        rows.append(torch.stack([own_before, own_after, rand_before, rand_after]))
    if not rows:
        return {}
    values = torch.stack(rows).cpu().tolist()  # the stage's one host sync
    return {uid: PeerLosses(uid, *vals) for uid, vals in zip(uids, values)}


@dataclass(frozen=True)
class BatchLosses:
    """Token-weighted mean loss of each batch before and after a peer's step (host floats)."""

    before: tuple[float, ...]
    after: tuple[float, ...]
    tokens: tuple[int, ...]

    @property
    def improvements(self) -> list[float]:
        """Each batch's relative improvement (before - after) / before: the own-data test's samples."""
        return [relative_improvement(b, a) for b, a in zip(self.before, self.after)]


def _per_batch(before: Sequence[float], after: Sequence[float], tokens: Sequence[int]) -> BatchLosses:
    return BatchLosses(tuple(s / n for s, n in zip(before, tokens)), tuple(s / n for s, n in zip(after, tokens)),
                       tuple(int(n) for n in tokens))


def score_peer_batches(evaluator: LossEvaluator, uid: int, after: Mapping[str, Tensor], own: Batches, rand: Batches,
                       rand_before: tuple[list[Tensor], list[int]] | None = None,
                       rand_before_mean: float | None = None) -> tuple[PeerLosses, BatchLosses, BatchLosses]:
    """`score_peers` for one peer, keeping each batch's losses: (PeerLosses, own, random).

    `after` is the peer's step, `evaluator.perturbed(delta, eta)`. The PeerLosses are the same
    four floats `score_peers` gives (same additions, same order). `rand_before` is
    `batch_sums(theta, rand)` when the caller shares it between peers, and `rand_before_mean`
    the window's L_rand_before when it was computed once for all chunks.
    `more_batches` scores further own batches of the same step. One host transfer.
    """
    theta = evaluator.theta
    own_b = evaluator.batch_sums(theta, own)
    rand_b = rand_before if rand_before is not None else evaluator.batch_sums(theta, rand)
    own_a, rand_a = evaluator.batch_sums(after, own), evaluator.batch_sums(after, rand)
    parts = (own_b, own_a, rand_b, rand_a)
    means = [token_mean(sums, sum(counts)) for sums, counts in parts]
    flat = torch.stack([*means, *(v for sums, _ in parts for v in sums)]).cpu().tolist()  # the one host sync
    m, rest = flat[:4], flat[4:]
    if rand_before_mean is not None:
        m[2] = rand_before_mean
    n_own, n_rand = len(own_b[0]), len(rand_b[0])
    own_losses = _per_batch(rest[:n_own], rest[n_own:2 * n_own], own_b[1])
    rand_losses = _per_batch(rest[2 * n_own:2 * n_own + n_rand], rest[2 * n_own + n_rand:], rand_b[1])
    return PeerLosses(uid, *m), own_losses, rand_losses


def more_batches(evaluator: LossEvaluator, after: Mapping[str, Tensor], batches: Batches) -> BatchLosses:
    """Per-batch losses at theta and at the peer's step `after` (the sequential own-data test's
    extra draws). One host transfer."""
    before, tokens = evaluator.batch_sums(evaluator.theta, batches)
    after_sums, _ = evaluator.batch_sums(after, batches)
    values = torch.stack([*before, *after_sums]).cpu().tolist()
    return _per_batch(values[:len(batches)], values[len(batches):], tokens)
