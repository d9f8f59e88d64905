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
once, so it needs them in one call (no chunks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from torch import Tensor

from gauntlet.config import GauntletConfig
from gauntlet.data import page_batches, random_pages, sample_batches
from gauntlet.miner import own_pages
from gauntlet.ratings import PeerScore
from gauntlet.scoring import LossEvaluator, PeerLosses, score_peers
from gauntlet.screening import RandomGradient, calibrated, choose_exact, first_order_score, random_gradient
from gauntlet.uniqueness import indicator
from gauntlet.verdicts import Reason, Verdict
from gauntlet.window.context import ModelContext, context_for, corpus_for
from gauntlet.window.fetch import Fetched
from gauntlet.window.guard import guarded
from gauntlet.window.load import load_submission
from gauntlet.window.plan import WindowPlan


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

    @property
    def screened(self) -> frozenset[int]:
        """Peers given a calibrated estimate only (scored but not scored exactly)."""
        return frozenset(self.scores) - frozenset(self.losses)

    @staticmethod
    def merge(parts: Sequence[Evaluated]) -> Evaluated:
        return Evaluated({u: v for p in parts for u, v in p.losses.items()},
                         {u: v for p in parts for u, v in p.scores.items()},
                         {u: v for p in parts for u, v in p.verdicts.items()},
                         {u: v for p in parts for u, v in p.estimates.items()})


def _score_one(cfg: GauntletConfig, ctx: ModelContext, plan: WindowPlan, fetched: Fetched, uid: int,
               evaluator: LossEvaluator, rand: list[Tensor] | None, rand_before: float | None) -> PeerLosses | Verdict:
    sub = load_submission(cfg, ctx, plan, fetched.by_uid()[uid])
    delta = ctx.codec.decode_all(sub.grads, ctx.spec.shapes)
    corpus = corpus_for(cfg)
    own = _sampled(cfg, ctx, own_pages(uid, plan.window, corpus, cfg), plan.seed + uid)
    rand = rand if rand is not None else _random_batches(cfg, ctx, plan, uid)
    losses = score_peers(evaluator, {uid: delta}, {uid: own}, rand, cfg.scoring.eval_lr_factor * plan.lr,
                         rand_before)[uid]
    bad = [name for name in ("own_before", "own_after", "rand_before", "rand_after")
           if not math.isfinite(getattr(losses, name))]
    if bad:
        return Verdict(uid, Reason.NON_FINITE, f"its step gives a non-finite loss ({', '.join(bad)})", stage="score")
    return losses


def _score_exact(cfg: GauntletConfig, ctx: ModelContext, plan: WindowPlan, fetched: Fetched, uids: Sequence[int],
                 rand: list[Tensor] | None, rand_before: float | None, out: Evaluated) -> None:
    evaluator = LossEvaluator(ctx.model, ctx.device)
    for uid in sorted(uids):
        got = guarded(uid, "score", _score_one, cfg, ctx, plan, fetched, uid, evaluator, rand, rand_before)
        if isinstance(got, Verdict):
            out.verdicts[uid] = got
            continue
        out.losses[uid] = got
        out.scores[uid] = PeerScore(got.gradient_score, got.own_improvement,
                                    indicator(got.own_improvement, got.gradient_score, cfg.uniqueness.own_margin))


def _estimate_one(cfg: GauntletConfig, ctx: ModelContext, plan: WindowPlan, fetched: Fetched, uid: int,
                  grad: RandomGradient, eta: float) -> float:
    sub = load_submission(cfg, ctx, plan, fetched.by_uid()[uid])
    return first_order_score(grad, ctx.codec.decode_all(sub.grads, ctx.spec.shapes), eta)


def _screened(cfg: GauntletConfig, ctx: ModelContext, plan: WindowPlan, fetched: Fetched,
              uids: Sequence[int]) -> Evaluated:
    """Estimate every peer, score `choose_exact`'s peers (and any non-finite estimate) exactly,
    calibrate the rest. Each peer is decoded once to estimate and again if scored exactly: one
    dense delta alive at a time, whatever the number of peers."""
    if not cfg.scoring.shared_random_batches:
        raise ValueError("screening.enabled needs scoring.shared_random_batches = true (the estimate is the "
                         "gradient of the window's one set of random batches)")
    batches = _random_batches(cfg, ctx, plan)
    grad = random_gradient(ctx.model, batches, ctx.device)
    _checked(grad.loss, plan)
    out, eta = Evaluated(), cfg.scoring.eval_lr_factor * plan.lr
    for uid in sorted(uids):
        got = guarded(uid, "score", _estimate_one, cfg, ctx, plan, fetched, uid, grad, eta)
        if isinstance(got, Verdict):
            out.verdicts[uid] = got
        else:
            out.estimates[uid] = got
    finite = {u: e for u, e in out.estimates.items() if math.isfinite(e)}
    exact = set(choose_exact(finite, cfg, plan.seed)) | (set(out.estimates) - set(finite))
    _score_exact(cfg, ctx, plan, fetched, sorted(exact), batches, grad.loss, out)
    values = calibrated(finite, {u: s.gradient_score for u, s in out.scores.items()})
    for uid in sorted(set(finite) - exact):
        out.scores[uid] = PeerScore(values[uid], None, None)
    return out


def run(cfg: GauntletConfig, plan: WindowPlan, fetched: Fetched, uids: Sequence[int],
        rand_before: float | None = None) -> Evaluated:
    """Stage "evaluate" for `uids` (all chosen peers, or one chunk of them)."""
    if cfg.screening.enabled and rand_before is not None:
        raise ValueError("screening ranks every chosen peer at once and cannot run on chunks of them: set "
                         "screening.enabled = false, or score on one device (no parallel chunks)")
    ctx = context_for(cfg)
    with ctx.lock:
        ctx.load_theta(cfg.validator.workdir, plan.window)
        if cfg.screening.enabled and uids:
            return _screened(cfg, ctx, plan, fetched, uids)
        if rand_before is None and uids:
            rand_before = _baseline(cfg, ctx, plan)
        rand = _random_batches(cfg, ctx, plan) if cfg.scoring.shared_random_batches else None
        out = Evaluated()
        _score_exact(cfg, ctx, plan, fetched, uids, rand, rand_before, out)
    return out
