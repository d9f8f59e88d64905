"""The aggregation rules people use instead of incentive-based selection, for the benchmark only.

Each rule maps the peers' dense updates, one row per peer (P, D), to one vector (D,). They are
written from their papers, with `byzfl`'s definitions (v0.0.11) as the reference for the exact
forms: byzfl itself is not a dependency, because importing any part of it imports its federated
learning framework (torchvision, seaborn) and installing it would replace this project's torch.

`f` is the number of Byzantine rows a rule is told to tolerate (the benchmark passes the true
number of hostile peers, the most favourable setting for the rules).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from gauntlet.aggregation import gram_distances, krum_scores

Rule = Callable[[Tensor, int], Tensor]


def _check(x: Tensor, f: int, need: int) -> None:
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"expected a (peers, dim) matrix with at least one peer, got shape {tuple(x.shape)}")
    if f < 0 or x.shape[0] < need:
        raise ValueError(f"{x.shape[0]} peers cannot tolerate f={f} here (need at least {need})")


def mean(x: Tensor, f: int = 0) -> Tensor:
    _check(x, f, 1)
    return x.mean(0)


def median(x: Tensor, f: int = 0) -> Tensor:
    """Coordinate-wise median (Yin et al. 2018); the mean of the two middle values for even P."""
    _check(x, f, 1)
    s = x.sort(0).values
    p = x.shape[0]
    return s[p // 2] if p % 2 else (s[p // 2 - 1] + s[p // 2]) / 2


def trimmed_mean(x: Tensor, f: int) -> Tensor:
    """Per coordinate, drop the f largest and f smallest values, average the rest (byzfl TrMean)."""
    _check(x, f, 2 * f + 1)
    return x.sort(0).values[f: x.shape[0] - f].mean(0)


def squared_distances(x: Tensor) -> Tensor:
    """(P, P) squared L2 distances from the Gram matrix (one P x D x P product, in float64)."""
    return gram_distances((x @ x.T).double())


def _krum_scores(x: Tensor, f: int, d: Tensor | None = None) -> Tensor:
    """byzfl's Krum score (the validator's own, `gauntlet.aggregation.krum_scores`)."""
    return krum_scores(squared_distances(x) if d is None else d, f)


def krum(x: Tensor, f: int) -> Tensor:
    """The row with the smallest Krum score (Blanchard et al. 2017)."""
    _check(x, f, 2 * f + 1)
    return x[int(_krum_scores(x, f).argmin())]


def multi_krum(x: Tensor, f: int) -> Tensor:
    """Mean of the n - f rows with the smallest Krum scores (byzfl MultiKrum)."""
    _check(x, f, 2 * f + 1)
    keep = _krum_scores(x, f).argsort()[: x.shape[0] - f]
    return x[keep].mean(0)


def centered_clipping(x: Tensor, f: int = 0, tau: float | None = None, iterations: int = 3,
                      start: Tensor | None = None) -> Tensor:
    """v <- v + mean_i clip(x_i - v, tau), from v = `start` (Karimireddy et al. 2021).

    byzfl's default tau = 100 is for raw gradients; our rows have unit norm, so tau defaults to
    the median distance of the rows to the start point (clips the farther half).
    """
    _check(x, f, 1)
    v = torch.zeros_like(x[0]) if start is None else start.clone()
    for _ in range(iterations):
        diff = x - v
        norms = diff.norm(dim=1)
        radius = float(norms.median()) if tau is None else tau
        scale = torch.clamp(radius / norms.clamp_min(1e-12), max=1.0)
        v = v + (diff * scale[:, None]).mean(0)
    return v


def bulyan(x: Tensor, f: int) -> Tensor:
    """Bulyan (El Mhamdi et al. 2018) over Krum: needs n >= 4f + 3.

    1. theta = n - 2f rows chosen one at a time by Krum, each removed from the pool once chosen;
    2. per coordinate, beta = theta - 2f values closest to the coordinate's median among the
       chosen rows, averaged.
    """
    _check(x, f, 4 * f + 3)
    d = squared_distances(x)
    pool = list(range(x.shape[0]))
    chosen = []
    for _ in range(x.shape[0] - 2 * f):
        scores = _krum_scores(x, f, d[pool][:, pool]) if len(pool) > 2 * f + 2 else torch.zeros(len(pool))
        chosen.append(pool.pop(int(scores.argmin())))
    sel = x[chosen]
    beta = len(chosen) - 2 * f
    med = median(sel)
    nearest = (sel - med).abs().argsort(0)[:beta]  # (beta, D)
    return sel.gather(0, nearest).mean(0)


RULES: dict[str, Rule] = {"mean": mean, "median": median, "trimmed_mean": trimmed_mean, "krum": krum,
                          "multi_krum": multi_krum, "centered_clipping": centered_clipping, "bulyan": bulyan}


def tolerable(rule: str, peers: int, f: int) -> int:
    """The largest f' <= f the rule accepts with `peers` rows (Bulyan needs n >= 4f + 3)."""
    need = {"trimmed_mean": lambda g: 2 * g + 1, "krum": lambda g: 2 * g + 1, "multi_krum": lambda g: 2 * g + 1,
            "bulyan": lambda g: 4 * g + 3}.get(rule, lambda g: 1)
    while f > 0 and peers < need(f):
        f -= 1
    return f


def flatten(dense: Mapping[str, Tensor], names: Sequence[str]) -> Tensor:
    return torch.cat([dense[n].flatten().float() for n in names])


def unflatten(vector: Tensor, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Tensor]:
    out, at = {}, 0
    for name, shape in shapes.items():
        size = int(torch.Size(shape).numel())
        out[name] = vector[at: at + size].view(shape)
        at += size
    if at != vector.numel():
        raise ValueError(f"vector has {vector.numel()} elements, the shapes {at}")
    return out
