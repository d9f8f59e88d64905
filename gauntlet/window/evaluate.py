"""Stage "evaluate" (stage 2 and uniqueness): each chosen peer's loss score and indicator.

For every chosen peer: its step ``theta - eta * sign(delta)`` scored on its own pages and on the
window's random pages (gauntlet/scoring.py), then the own-data indicator ``b``. Each peer is
decoded and scored inside the per-peer guard, one dense delta alive at a time; a non-finite loss
gives that peer a `non_finite` verdict and never reaches the rating match. A non-finite
``L_rand_before`` is the validator's own fault (its model or data), so the window stops there.
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


def _baseline(cfg: GauntletConfig, ctx: ModelContext, plan: WindowPlan) -> float | None:
    if not cfg.scoring.shared_random_batches:
        return None
    evaluator = LossEvaluator(ctx.model, ctx.device)
    value = evaluator.mean_loss(evaluator.theta, _random_batches(cfg, ctx, plan)).item()
    if not math.isfinite(value) or value <= 0:
        raise ValidatorFault(f"L_rand_before of window {plan.window} is {value}: the validator's model or data "
                             "is broken (no peer is scored against it)")
    return value


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

    @staticmethod
    def merge(parts: Sequence[Evaluated]) -> Evaluated:
        return Evaluated({u: v for p in parts for u, v in p.losses.items()},
                         {u: v for p in parts for u, v in p.scores.items()},
                         {u: v for p in parts for u, v in p.verdicts.items()})


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


def run(cfg: GauntletConfig, plan: WindowPlan, fetched: Fetched, uids: Sequence[int],
        rand_before: float | None = None) -> Evaluated:
    """Stage "evaluate" for `uids` (all chosen peers, or one chunk of them)."""
    ctx = context_for(cfg)
    out = Evaluated()
    with ctx.lock:
        ctx.load_theta(cfg.validator.workdir, plan.window)
        if rand_before is None and uids:
            rand_before = _baseline(cfg, ctx, plan)
        rand = _random_batches(cfg, ctx, plan) if cfg.scoring.shared_random_batches else None
        evaluator = LossEvaluator(ctx.model, ctx.device)
        for uid in sorted(uids):
            got = guarded(uid, "score", _score_one, cfg, ctx, plan, fetched, uid, evaluator, rand, rand_before)
            if isinstance(got, Verdict):
                out.verdicts[uid] = got
                continue
            out.losses[uid] = got
            out.scores[uid] = PeerScore(got.gradient_score, got.own_improvement,
                                        indicator(got.own_improvement, got.gradient_score, cfg.uniqueness.own_margin))
    return out
