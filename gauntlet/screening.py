"""Screening (ours, off by default): estimate every peer's s_k, score exactly only where it decides.

Exact scoring costs each peer three forward passes; at 1.2B that is the whole of stage 2 and
caps a window at some tens of peers per GPU (`gauntlet.costmodel`). But s_k is the relative
drop of `L_rand` under a small step `theta_k = theta - eta * sign(delta_k)`, and to first order

    L_rand(theta_k) ~ L_rand(theta) - eta * <g, sign(delta_k)>,   g = grad L_rand(theta)

so s_k ~ eta * <g, sign(delta_k)> / L_rand(theta). One backward pass on the window's random
batches (the same ones exact scoring uses, which gives `L_rand_before` as well) then estimates
every peer for the cost of decoding its delta and one dot product.

Exact scores are then spent where a wrong estimate would change a decision (`choose_exact`):
the top `gather_size + margin` peers by estimate (the gather set's candidates), peers whose
estimate lies near the gather cutoff, and an audit sample drawn from the window's seed among
the rest, so that a peer shaping its update to look good to the linear estimate is caught with
a known probability. Peers left screened keep a calibrated estimate (`calibrated`): a
least-squares line from estimate to exact score, fitted on the window's exactly scored peers,
so estimates and exact scores rank on one scale.

In the window (`gauntlet.window.evaluate`) a screened peer plays the rating match with its
calibrated score but has no own-data losses, so its B is left unchanged. Measured on a 21-peer
local network (benchmarks/bench_screening.py, 5 windows, same submissions and theta as exact
scoring): with this config's settings 14 of 16 chosen peers were still scored exactly, no weight
moved (0.0% in every window) and the evaluate stage was 1.06x faster; a leaner exact set (top G,
2 near the cutoff, 1 audit draw: 11 of 16) was 1.35x faster with the same ratings (Spearman of the
estimates >= 0.997, top-G overlap 1.0) but moved up to 12% of the weight, all of it through B:
honest peers left screened keep last window's B while exact scoring raises it. Hence off by
default: the saving is small at this scale, and at the paper's scale (most peers screened) a
frozen B would move weight unless the own-data side is estimated too.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from gauntlet.config import GauntletConfig
from gauntlet.model import autocast, causal_lm_loss_sum


@dataclass(frozen=True)
class RandomGradient:
    """`L_rand(theta)` (token-weighted mean) and its gradient, one tensor per parameter."""

    loss: float
    grad: dict[str, Tensor]


def random_gradient(model: torch.nn.Module, batches: Sequence[Tensor],
                    device: torch.device | str | None = None) -> RandomGradient:
    """One forward and backward pass over the batches; the model's own parameters are untouched.

    The loss is the token-weighted mean over all batches (as exact scoring defines it), so each
    batch's summed loss is divided by the total token count and the gradients accumulate one
    batch at a time: the activations of one batch are alive at once, whatever the batch count.
    The backward pass runs with torch's deterministic algorithms: on a GPU the embedding's
    gradient is otherwise summed with atomics in a varying order, and the estimates it gives are
    recorded and must replay bit for bit.
    """
    if not batches:
        raise ValueError("random_gradient needs at least one batch")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    params = {n: p.detach().requires_grad_(True) for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    tokens = sum(b.shape[0] * (b.shape[1] - 1) for b in batches)
    grad = {n: torch.zeros_like(p) for n, p in params.items()}
    total = torch.zeros((), dtype=torch.float64, device=device)
    with _deterministic():
        for batch in batches:
            with autocast(device):
                loss, _ = causal_lm_loss_sum(model, params, buffers, batch.to(device))
            parts = torch.autograd.grad(loss / tokens, list(params.values()), allow_unused=True)
            for (name, _), part in zip(params.items(), parts):
                if part is not None:
                    grad[name].add_(part)
            total += loss.detach().double()
    return RandomGradient(total.item() / tokens, grad)  # the one host sync


@contextmanager
def _deterministic() -> Iterator[None]:
    """torch's deterministic algorithms for the block (a process-wide switch, put back after)."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def first_order_score(rand: RandomGradient, delta: Mapping[str, Tensor], eta: float) -> float:
    """s_k to first order: `eta * <g, sign(delta_k)> / L_rand(theta)` (0 if the loss is <= 0)."""
    missing = set(rand.grad) - set(delta)
    if missing:
        raise ValueError(f"delta lacks parameters: {sorted(missing)[:3]}...")
    if rand.loss <= 0:
        return 0.0
    dot = torch.zeros((), dtype=torch.float64, device=next(iter(rand.grad.values())).device)
    for name, g in rand.grad.items():
        dot += torch.dot(g.flatten(), torch.sign(delta[name].to(g.device, g.dtype)).flatten()).double()
    return eta * dot.item() / rand.loss


def estimate_scores(model: torch.nn.Module, batches: Sequence[Tensor], deltas: Mapping[int, Mapping[str, Tensor]],
                    eta: float, rand: RandomGradient | None = None) -> dict[int, float]:
    """Estimated s_k of every peer; `deltas` may decode lazily (one dense delta alive at a time)."""
    rand = random_gradient(model, batches) if rand is None else rand
    return {uid: first_order_score(rand, deltas[uid], eta) for uid in sorted(deltas)}


def _by_estimate(estimates: Mapping[int, float]) -> list[int]:
    return sorted(estimates, key=lambda u: (-estimates[u], u))


def near_cutoff(estimates: Mapping[int, float], cutoff_rank: int, band: float, limit: int,
                exclude: set[int]) -> list[int]:
    """Up to `limit` peers not in `exclude` whose estimate is within band * median |estimate|
    of the estimate at `cutoff_rank` (0-based), closest first. The median is the scale because a
    few hostile peers with huge estimates cannot move it."""
    ranked = _by_estimate(estimates)
    if not ranked or limit <= 0:
        return []
    cut = estimates[ranked[min(cutoff_rank, len(ranked) - 1)]]
    scale = sorted(abs(v) for v in estimates.values())[len(estimates) // 2]
    close = [u for u in ranked if u not in exclude and abs(estimates[u] - cut) <= band * scale]
    return sorted(close, key=lambda u: (abs(estimates[u] - cut), u))[:limit]


def choose_exact(estimates: Mapping[int, float], cfg: GauntletConfig, seed: int) -> list[int]:
    """The peers to score exactly: top `gather_size + margin` by estimate, up to `max_near` near
    the gather cutoff, and `audit_peers` drawn from the rest with `seed` (the window's). Sorted;
    a pure function of its inputs, so a replay chooses the same peers."""
    s, gather = cfg.screening, cfg.aggregation.gather_size
    ranked = _by_estimate(estimates)
    chosen = set(ranked[: gather + s.margin])
    chosen |= set(near_cutoff(estimates, gather - 1, s.band, s.max_near, chosen))
    rest = sorted(set(ranked) - chosen)
    chosen |= set(random.Random(seed).sample(rest, min(s.audit_peers, len(rest))))
    return sorted(chosen)


def calibrated(estimates: Mapping[int, float], exact: Mapping[int, float]) -> dict[int, float]:
    """Exact scores where known; elsewhere `a + b * estimate`, least squares on the exact peers.

    With fewer than two distinct estimates among the exact peers (or a fit whose slope is not
    positive, which would invert the ranking) the estimates are kept as they are.
    """
    pairs = [(estimates[u], exact[u]) for u in exact if u in estimates]
    xs = [x for x, _ in pairs]
    a, b = 0.0, 1.0
    if len(set(xs)) >= 2:
        mx, my = sum(xs) / len(xs), sum(y for _, y in pairs) / len(pairs)
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in pairs) / sxx
        if slope > 0:
            a, b = my - slope * mx, slope
    return {u: exact[u] if u in exact else a + b * v for u, v in estimates.items()}


# How well two scorings of the same peers agree (the benchmark's figures; a window could record
# them on its exactly scored peers as a health signal of the estimate).

def mean_ranks(values: list[float]) -> list[float]:
    """The rank of each value, ties sharing their mean rank (Spearman's convention)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):  # ties share their mean rank
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(a: Mapping[int, float], b: Mapping[int, float]) -> float:
    """Rank correlation of two scorings of the same peers (ties share their mean rank)."""
    if set(a) != set(b) or len(a) < 2:
        raise ValueError(f"spearman needs the same peers (at least two) on both sides, got {len(a)} and {len(b)}")
    uids = sorted(a)
    ra, rb = mean_ranks([a[u] for u in uids]), mean_ranks([b[u] for u in uids])
    return statistics.correlation(ra, rb)


def topg_overlap(a: Mapping[int, float], b: Mapping[int, float], g: int) -> float:
    """Share of the top `g` peers by `a` that are also in the top `g` by `b`."""
    if g < 1:
        raise ValueError(f"g must be >= 1, got {g}")
    return len(set(_by_estimate(a)[:g]) & set(_by_estimate(b)[:g])) / g
