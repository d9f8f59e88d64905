"""The model step of a window: merge the gather set's pseudo-gradients and take a sign step.

Each peer's values are scaled to unit L2 norm per tensor before merging, so no single peer can
dominate the aggregate by sending large values; the merge is a mean over the peers that chose a
coefficient (the reference's scatter-mean, `aggregation.merge = "choosers"`) or over all the
gathered peers (`"all"`, ours: the mean of their decoded updates), then the codec's decode (an
IDCT, or a plain scatter for SparseLoCo) per tensor. The step uses only the sign of the
merged delta (plain SGD on sign, no momentum, no weight decay), as in GAUNTLET.md.

Before a network's first gather list is in force there are no ratings to choose by, and
`aggregation.startup = "multi_krum"` (ours) merges only the files that Multi-Krum keeps
(`multi_krum`, on the same unit-norm updates): every node computes it from the same files alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from gauntlet.codec import Codec, Compressed, coefficient_gram


def _stack_peers(peers: Sequence[Compressed], name: str) -> tuple[Tensor, Tensor]:
    """-> idx (P, C, k), vals (P, C, k) of one tensor across peers; ValueError names the peer."""
    idx, vals = [], []
    for i, peer in enumerate(peers):
        if name not in peer:
            raise ValueError(f"peer {i} has no tensor {name!r}; only files that passed stage 1 may be aggregated")
        pi, pv = peer[name]
        if idx and (pi.shape != idx[0].shape or pv.shape != pi.shape):
            raise ValueError(
                f"peer {i} tensor {name!r}: idx {tuple(pi.shape)} / vals {tuple(pv.shape)} "
                f"differ from peer 0's {tuple(idx[0].shape)}"
            )
        idx.append(pi)
        vals.append(pv)
    return torch.stack(idx), torch.stack(vals).to(torch.float32)


def _unit_norm(vals: Tensor) -> Tensor:
    """Scale each peer's values (P, C, k) to unit L2 norm; an all-zero peer stays zero.

    The norm is taken in float64: a float32 sum of squares overflows for values above ~1e19,
    which would silently zero a (hostile) peer instead of normalising it.
    """
    wide = vals.to(torch.float64)
    norms = torch.linalg.vector_norm(wide.flatten(1), dim=1)  # (P,)
    scale = torch.where(norms > 0, norms, torch.ones_like(norms))
    return (wide / scale.view(-1, 1, 1)).to(torch.float32)


MERGES = ("choosers", "all")


def aggregate(
    codec: Codec, peers: Sequence[Compressed], shapes: Mapping[str, tuple[int, ...]], merge: str = "choosers"
) -> dict[str, Tensor]:
    """The dense delta per tensor of `shapes`, in float32 on the peers' idx device.

    `merge` (aggregation.merge): "choosers", the reference's mean at each index over the peers
    that chose it; "all" (ours), the sum over them divided by the number of peers, i.e. the mean
    of the peers' decoded updates. The scatter-mean weighs an index one peer chose as much as one
    every peer chose, which tilts the sign step toward idiosyncratic coefficients: on a 7-peer
    honest network it ended 0.7% above the mean of the same files in held-out loss (README,
    "Loss against the rules people use instead").
    """
    if merge not in MERGES:
        raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
    if not peers:
        raise ValueError("aggregate needs at least one peer; the gather set is empty")
    for i, peer in enumerate(peers):
        extra = sorted(set(peer) - set(shapes))
        if extra:
            raise ValueError(f"peer {i} has tensors the model lacks: {extra}")
    out: dict[str, Tensor] = {}
    for name, shape in shapes.items():
        idx, vals = _stack_peers(peers, name)  # (P, C, k)
        out[name] = codec.decode_mean(idx, _unit_norm(vals), shape, len(peers) if merge == "all" else None)
    return out


def sign_step(params: Mapping[str, Tensor], delta: Mapping[str, Tensor], lr: float) -> None:
    """In place `p -= lr * sign(delta)` for every parameter; each moves by lr or not at all."""
    missing = sorted(set(params) - set(delta))
    extra = sorted(set(delta) - set(params))
    if missing or extra:
        raise ValueError(f"delta does not match the parameters: missing {missing}, unknown {extra}")
    for name, p in params.items():
        if tuple(delta[name].shape) != tuple(p.shape):
            raise ValueError(f"delta {name!r} has shape {tuple(delta[name].shape)}, parameter has {tuple(p.shape)}")
    with torch.no_grad():
        for name, p in params.items():
            p.sub_(torch.sign(delta[name]).to(device=p.device, dtype=p.dtype), alpha=lr)


DISTANCE_DECIMALS = 9
"""Squared distances are rounded to this many decimals before Multi-Krum ranks them (they are
O(1): each tensor of each peer has unit norm), so a difference in the last bits of a float64 sum
between two machines cannot change which files a miner and the validator aggregate."""


def peer_distances(codec: Codec, peers: Sequence[Compressed], shapes: Mapping[str, tuple[int, ...]]) -> Tensor:
    """(P, P) float64 squared L2 distances between the peers' updates as `aggregate` merges them
    (decoded, each tensor scaled to unit norm), summed over the tensors of `shapes`; computed on
    the coefficients (`codec.coefficient_gram`), rounded to `DISTANCE_DECIMALS`."""
    if not peers:
        raise ValueError("peer_distances needs at least one peer")
    gram = torch.zeros(len(peers), len(peers), dtype=torch.float64)
    for name, shape in shapes.items():
        idx, vals = _stack_peers(peers, name)
        gram += coefficient_gram(idx, _unit_norm(vals), codec.layout(shape)).cpu()
    return gram_distances(gram).round_(decimals=DISTANCE_DECIMALS)


def gram_distances(gram: Tensor) -> Tensor:
    """(P, P) inner products -> (P, P) squared L2 distances, |a|^2 + |b|^2 - 2<a, b>, at least 0."""
    sq = gram.diagonal()
    return (sq[:, None] + sq[None, :] - 2 * gram).clamp_min(0)


def krum_scores(distances: Tensor, f: int) -> Tensor:
    """Each peer's Krum score (byzfl's form): its mean squared distance to its n - f - 1 nearest
    others (column 0 of each sorted row is the peer itself, at distance 0)."""
    return distances.sort(dim=1).values[:, 1: distances.shape[0] - f].mean(dim=1)


def tolerated(peers: int, hostile_share: float) -> int:
    """Multi-Krum's f for `peers` files: floor(hostile_share x peers), at most (peers - 3) // 2
    (Krum's guarantee needs n >= 2f + 3), and 0 below three files."""
    return max(0, min(int(hostile_share * peers), (peers - 3) // 2))


def multi_krum(distances: Tensor, f: int) -> list[int]:
    """The positions of the n - f peers Multi-Krum keeps (Blanchard et al. 2017; byzfl's form):
    each peer's score is its mean squared distance to its n - f - 1 nearest others, the n - f
    lowest scores are kept; ties go to the lower position. Returned in ascending order.

    With at most f hostile peers among n >= 2f + 3, a hostile peer's n - f - 1 nearest include at
    most f - 1 other hostile ones and so at least n - 2f >= 3 honest ones: a group of hostile
    files (identical copies included) cannot vouch for itself.
    """
    n = distances.shape[0]
    if distances.shape != (n, n):
        raise ValueError(f"distances must be a square matrix, got shape {tuple(distances.shape)}")
    if f < 0 or (f > 0 and n < 2 * f + 3):
        raise ValueError(f"{n} peers cannot tolerate f={f} (Multi-Krum needs n >= 2f + 3)")
    if f == 0:
        return list(range(n))
    scores = krum_scores(distances, f)
    order = sorted(range(n), key=lambda i: (float(scores[i]), i))
    return sorted(order[: n - f])
