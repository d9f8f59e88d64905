"""Stage "evaluate" (stage 2 and uniqueness): each chosen peer's loss score and indicator.

For every chosen peer: its step ``theta - eta * sign(delta)`` scored on its own pages and on the
window's random pages (gauntlet/scoring.py), then the own-data indicator ``b``. Each peer is
decoded and scored inside the per-peer guard, one dense delta alive at a time; a non-finite loss
gives that peer a `non_finite` verdict and never reaches the rating match. A non-finite
``L_rand_before`` is the validator's own fault (its model or data), so the window stops there.

With `screening.enabled` (ours, `gauntlet.screening`): one backward pass on the window's random
batches gives `L_rand_before` and its gradient; every chosen peer's s_k is estimated from it
(decode and one dot product); `choose_exact` (seeded by the window's seed, so a replay picks the
same) names the peers scored exactly as above, and the rest keep a calibrated estimate. Those
screened peers have no own-data losses: they play the rating match with the calibrated score,
but their B is left unchanged (no indicator this window; `PeerScore.indicator` is None), and
they are not in `losses`. A peer whose estimate is not finite is always scored exactly, so its
verdict comes from the exact losses as without screening. Screening ranks all chosen peers at
once: in one call `run` does it all; a pipeline that scores in chunks calls `screen` first,
scores its exact set in chunks (`run(..., screened=)`), then `calibrate`s the merged result.

With `uniqueness.own_test = "sequential"` (ours) the same forward passes keep each batch's losses
(`scoring.score_peer_batches`; the four recorded losses are the same bits), b comes from
`uniqueness.sequential_own_test` on the per-batch improvements, and while that is undecided more
of the peer's own batches are scored: its unsampled ones, in `draw_order` seeded by the window's
seed and the uid (`own_batches`), so a replay draws the same. `Evaluated.own_tests` keeps what
the test saw, for the audit's `own_batches`, `own_difference` and `own_std_error`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import Tensor

from gauntlet.config import GauntletConfig
from gauntlet.data import page_batches, random_pages, sample_batches
from gauntlet.miner import own_pages
from gauntlet.ratings import PeerScore
from gauntlet.scoring import BatchLosses, LossEvaluator, PeerLosses, more_batches, score_peer_batches, score_peers
from gauntlet.screening import RandomGradient, calibrated, choose_exact, first_order_score, random_gradient
from gauntlet.uniqueness import OwnTest, draw_order, indicator, sequential_own_test
from gauntlet.verdicts import Reason, Verdict
from gauntlet.window.context import ModelContext, context_for, corpus_for
from gauntlet.window.fetch import Fetched
from gauntlet.window.guard import guarded
from gauntlet.window.load import load_submission
from gauntlet.window.plan import WindowPlan


RandSums = tuple[list[Tensor], list[int]]
"""`LossEvaluator.batch_sums` of the shared random batches at theta."""


class ValidatorFault(RuntimeError):
    """The validator's own state or data is broken (not any peer's doing): the window fails."""


def _sampled(cfg: GauntletConfig, ctx: ModelContext, pages: list[int], seed: int) -> list[Tensor]:
    batches = page_batches(corpus_for(cfg), ctx.tokenizer, pages, cfg.data)
    return sample_batches(batches, cfg.scoring.sample_rate, seed)


def _random_batches(cfg: GauntletConfig, ctx: ModelContext, plan: WindowPlan, uid: int | None = None) -> list[Tensor]:
    """The window's shared random batches (`shared_random_batches`, ours), or a peer's own set."""
    n_pages = corpus_for(cfg).n_pages(cfg.data.rows_per_page)
    seed = plan.seed if uid is None else plan.seed + uid
    return _sampled(cfg, ctx, random_pages(seed, cfg.scoring.random_pages, n_pages), seed)


def _checked(value: float, plan: WindowPlan) -> float:
    if not math.isfinite(value) or value <= 0:
        raise ValidatorFault(f"L_rand_before of window {plan.window} is {value}: the validator's model or data "
                             "is broken (no peer is scored against it)")
    return value


def _baseline(cfg: GauntletConfig, ctx: ModelContext, plan: WindowPlan) -> float | None:
    if not cfg.scoring.shared_random_batches:
        return None
    evaluator = LossEvaluator(ctx.model, ctx.device)
    return _checked(evaluator.mean_loss(evaluator.theta, _random_batches(cfg, ctx, plan)).item(), plan)


def baseline(cfg: GauntletConfig, plan: WindowPlan) -> float | None:
    """L_rand_before of the window, computed once (None when each peer has its own random batches)."""
    ctx = context_for(cfg)
    with ctx.lock:
        ctx.load_theta(cfg.validator.workdir, plan.window)
        return _baseline(cfg, ctx, plan)


@dataclass(frozen=True)
class Evaluated:
    """Result of stage "evaluate" (or of one chunk of it)."""

    losses: dict[int, PeerLosses] = field(default_factory=dict)
    scores: dict[int, PeerScore] = field(default_factory=dict)
    verdicts: dict[int, Verdict] = field(default_factory=dict)
    """Peers rejected while being scored (non-finite losses, internal errors): these replace
    their stage-1 verdicts."""
    estimates: dict[int, float] = field(default_factory=dict)
    """First-order estimates of s_k (screening on; empty when off)."""
    own_tests: dict[int, OwnTest] = field(default_factory=dict)
    """What the sequential own-data test saw (uniqueness.own_test = "sequential"; else empty)."""

    @property
    def screened(self) -> frozenset[int]:
        """Peers given a calibrated estimate only (scored but not scored exactly)."""
        return frozenset(self.scores) - frozenset(self.losses)

    @staticmethod
    def merge(parts: Sequence[Evaluated]) -> Evaluated:
        return Evaluated({u: v for p in parts for u, v in p.losses.items()},
                         {u: v for p in parts for u, v in p.scores.items()},
                         {u: v for p in parts for u, v in p.verdicts.items()},
                         {u: v for p in parts for u, v in p.estimates.items()},
                         {u: v for p in parts for u, v in p.own_tests.items()})


def own_batches(cfg: GauntletConfig, ctx: ModelContext, plan: WindowPlan,
                uid: int) -> tuple[list[Tensor], list[Tensor]]:
    """(the peer's sampled own batches, its other own batches in the order the sequential test
    draws them: `draw_order`, seeded by the window's seed and the uid, so a replay draws the same)."""
    seed = plan.seed + uid
    batches = page_batches(corpus_for(cfg), ctx.tokenizer, own_pages(uid, plan.window, corpus_for(cfg), cfg), cfg.data)
    sampled = sample_batches(batches, cfg.scoring.sample_rate, seed)
    rest = [b for b in batches if not any(b is t for t in sampled)]
    return sampled, [rest[i] for i in draw_order(len(rest), seed)]


def _own_test(cfg: GauntletConfig, evaluator: LossEvaluator, after: dict[str, Tensor], own: BatchLosses,
              rand: BatchLosses, s: float, extra: list[Tensor]) -> OwnTest:
    remaining = iter(extra)

    def draw() -> float | None:
        batch = next(remaining, None)
        return None if batch is None else more_batches(evaluator, after, [batch]).improvements[0]

    uq = cfg.uniqueness
    return sequential_own_test(own.improvements, rand.improvements, s, draw, margin=uq.own_margin, z=uq.own_z,
                               sd_floor=uq.own_sd_floor, max_batches=uq.own_max_batches, undecided=uq.own_undecided)


def _score_one(cfg: GauntletConfig, ctx: ModelContext, plan: WindowPlan, fetched: Fetched, uid: int,
               evaluator: LossEvaluator, rand: list[Tensor] | None, rand_before: float | None,
               rand_sums: RandSums | None) -> tuple[PeerLosses, OwnTest | None] | Verdict:
    sub = load_submission(cfg, ctx, plan, fetched.by_uid()[uid])
    delta = ctx.codec.decode_all(sub.grads, ctx.spec.shapes)
    own, extra = own_batches(cfg, ctx, plan, uid)
    rand = rand if rand is not None else _random_batches(cfg, ctx, plan, uid)
    eta = cfg.scoring.eval_lr_factor * plan.lr
    test = None
    if cfg.uniqueness.own_test == "margin":
        losses = score_peers(evaluator, {uid: delta}, {uid: own}, rand, eta, rand_before)[uid]
    else:
        after = evaluator.perturbed(delta, eta)
        losses, own_l, rand_l = score_peer_batches(evaluator, uid, after, own, rand, rand_sums, rand_before)
    bad = [name for name in ("own_before", "own_after", "rand_before", "rand_after")
           if not math.isfinite(getattr(losses, name))]
    if bad:
        return Verdict(uid, Reason.NON_FINITE, f"its step gives a non-finite loss ({', '.join(bad)})", stage="score")
    if cfg.uniqueness.own_test == "sequential":
        test = _own_test(cfg, evaluator, after, own_l, rand_l, losses.gradient_score, extra)
    return losses, test


def _score_exact(cfg: GauntletConfig, ctx: ModelContext, plan: WindowPlan, fetched: Fetched, uids: Sequence[int],
                 rand: list[Tensor] | None, rand_before: float | None, out: Evaluated) -> None:
    evaluator = LossEvaluator(ctx.model, ctx.device)
    # Sequential test with shared random batches: their per-batch losses before, once per call.
    rand_sums = (evaluator.batch_sums(evaluator.theta, rand)
                 if rand is not None and cfg.uniqueness.own_test == "sequential" and uids else None)
    for uid in sorted(uids):
        got = guarded(uid, "score", _score_one, cfg, ctx, plan, fetched, uid, evaluator, rand, rand_before, rand_sums)
        if isinstance(got, Verdict):
            out.verdicts[uid] = got
            continue
        losses, test = got
        out.losses[uid] = losses
        b = (indicator(losses.own_improvement, losses.gradient_score, cfg.uniqueness.own_margin)
             if test is None else test.indicator)
        out.scores[uid] = PeerScore(losses.gradient_score, losses.own_improvement, b)
        if test is not None:
            out.own_tests[uid] = test


def _estimate_one(cfg: GauntletConfig, ctx: ModelContext, plan: WindowPlan, fetched: Fetched, uid: int,
                  grad: RandomGradient, eta: float) -> float:
    sub = load_submission(cfg, ctx, plan, fetched.by_uid()[uid])
    return first_order_score(grad, ctx.codec.decode_all(sub.grads, ctx.spec.shapes), eta)


@dataclass(frozen=True)
class Screened:
    """Screening's first part (every chosen peer estimated, the exact set chosen), before any
    peer is scored exactly. Small and picklable: a chunked pipeline hands it to each chunk."""

    estimates: dict[int, float]
    exact: tuple[int, ...]
    """`choose_exact`'s peers and any whose estimate is not finite, sorted."""
    rand_before: float
    """L_rand_before, from the forward pass of the backward pass (shared by every exact score)."""
    verdicts: dict[int, Verdict] = field(default_factory=dict)
    """Peers whose file could not be decoded for the estimate (internal errors)."""


def _screen(cfg: GauntletConfig, ctx: ModelContext, plan: WindowPlan, fetched: Fetched,
            uids: Sequence[int]) -> Screened:
    if not cfg.scoring.shared_random_batches:
        raise ValueError("screening.enabled needs scoring.shared_random_batches = true (the estimate is the "
                         "gradient of the window's one set of random batches)")
    grad = random_gradient(ctx.model, _random_batches(cfg, ctx, plan), ctx.device)
    _checked(grad.loss, plan)
    estimates, verdicts, eta = {}, {}, cfg.scoring.eval_lr_factor * plan.lr
    for uid in sorted(uids):
        got = guarded(uid, "score", _estimate_one, cfg, ctx, plan, fetched, uid, grad, eta)
        if isinstance(got, Verdict):
            verdicts[uid] = got
        else:
            estimates[uid] = got
    finite = {u: e for u, e in estimates.items() if math.isfinite(e)}
    exact = set(choose_exact(finite, cfg, plan.seed)) | (set(estimates) - set(finite))
    return Screened(estimates, tuple(sorted(exact)), grad.loss, verdicts)


def screen(cfg: GauntletConfig, plan: WindowPlan, fetched: Fetched, uids: Sequence[int]) -> Screened:
    """Estimate every chosen peer and choose the exact set (for a pipeline that then scores the
    exact set in chunks: `run(..., screened=)` per chunk, then `calibrate`)."""
    ctx = context_for(cfg)
    with ctx.lock:
        ctx.load_theta(cfg.validator.workdir, plan.window)
        return _screen(cfg, ctx, plan, fetched, uids)


def calibrate(screened: Screened, exact: Evaluated) -> Evaluated:
    """The whole window's result: the exact part as scored, every peer's estimate, and the
    peers left screened with their calibrated estimate (no losses, no indicator)."""
    finite = {u: e for u, e in screened.estimates.items() if math.isfinite(e)}
    values = calibrated(finite, {u: s.gradient_score for u, s in exact.scores.items()})
    rest = {u: PeerScore(values[u], None, None) for u in sorted(set(finite) - set(screened.exact))}
    return Evaluated(dict(exact.losses), {**exact.scores, **rest}, {**screened.verdicts, **exact.verdicts},
                     dict(screened.estimates), dict(exact.own_tests))


def run(cfg: GauntletConfig, plan: WindowPlan, fetched: Fetched, uids: Sequence[int],
        rand_before: float | None = None, screened: Screened | None = None) -> Evaluated:
    """Stage "evaluate" for `uids` (all chosen peers, or one chunk of them).

    Screening on, in one call (no chunks): estimate all, score the exact set, calibrate the rest.
    With `screened` (chunks of its exact set): only `uids` are scored exactly, against its
    L_rand_before; the caller merges the chunks and `calibrate`s.
    """
    if screened is not None and not set(uids) <= set(screened.exact):
        raise ValueError(f"peers {sorted(set(uids) - set(screened.exact))[:5]} are not in the screened exact set")
    if cfg.screening.enabled and screened is None and rand_before is not None:
        raise ValueError("screening ranks every chosen peer at once: a chunked pipeline must call `screen` first "
                         "and pass its result to each chunk (or set screening.enabled = false)")
    ctx = context_for(cfg)
    out = Evaluated()
    with ctx.lock:
        ctx.load_theta(cfg.validator.workdir, plan.window)
        whole = cfg.screening.enabled and screened is None and bool(uids)
        screened = _screen(cfg, ctx, plan, fetched, uids) if whole else screened
        if screened is not None:
            uids, rand_before = screened.exact if whole else uids, screened.rand_before
        elif rand_before is None and uids:
            rand_before = _baseline(cfg, ctx, plan)
        rand = _random_batches(cfg, ctx, plan) if cfg.scoring.shared_random_batches else None
        _score_exact(cfg, ctx, plan, fetched, uids, rand, rand_before, out)
    return calibrate(screened, out) if whole else out
