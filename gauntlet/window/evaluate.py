"""Stage 2 and uniqueness: choose the peers to evaluate, score them, compute the indicator."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from torch import Tensor

from gauntlet.config import GauntletConfig
from gauntlet.data import page_batches, random_pages, sample_batches
from gauntlet.miner import own_pages
from gauntlet.ratings import PeerScore, PeerState, ValidatorState, is_banned
from gauntlet.scoring import LossEvaluator, PeerLosses, score_peers
from gauntlet.submission import Submission
from gauntlet.uniqueness import indicator
from gauntlet.verdicts import Reason, Verdict
from gauntlet.window.context import ValidatorContext
from gauntlet.window.plan import WindowPlan


def apply_bans(verdicts: dict[int, Verdict], state: ValidatorState, window: int) -> dict[int, Verdict]:
    """Peers barred for copying get a `banned` verdict instead of being evaluated."""
    out = dict(verdicts)
    for uid, verdict in verdicts.items():
        peer = state.peers.get(uid)
        if verdict.ok and is_banned(peer, window):
            out[uid] = Verdict(uid, Reason.BANNED, f"barred for copying until window {peer.banned_until}",
                               stage="copy")
    return out


def select_for_evaluation(candidates: list[int], peers: Mapping[int, PeerState], window: int, seed: int,
                          cfg: GauntletConfig) -> list[int]:
    """`all` (ours): every candidate. `sample` (paper): a few, by bins of final score, with
    probability proportional to the windows since each was last evaluated."""
    if cfg.scoring.policy == "all" or len(candidates) <= cfg.scoring.peers_per_window:
        return sorted(candidates)
    rng = random.Random(seed)
    ranked = sorted(candidates, key=lambda u: (-(peers[u].final_score if u in peers else 0.0), u))
    n_bins = min(cfg.scoring.bins, len(ranked))
    bins = [ranked[i::n_bins] for i in range(n_bins)]
    chosen: list[int] = []
    while len(chosen) < cfg.scoring.peers_per_window:
        pool = [u for u in bins[len(chosen) % n_bins] if u not in chosen] or \
               [u for u in ranked if u not in chosen]
        age = [window - (peers[u].last_evaluated_window if u in peers and peers[u].last_evaluated_window
                         is not None else -1) for u in pool]
        chosen.append(rng.choices(pool, weights=age)[0])
    return sorted(chosen)


class _LazyDeltas(Mapping[int, Mapping[str, Tensor]]):
    """Decode a peer's dense delta only when the scorer reaches it (one alive at a time)."""

    def __init__(self, ctx: ValidatorContext, subs: Mapping[int, Submission]) -> None:
        self.ctx, self.subs = ctx, subs

    def __getitem__(self, uid: int) -> Mapping[str, Tensor]:
        return self.ctx.codec.decode_all(self.subs[uid].grads, self.ctx.spec.shapes)

    def __iter__(self) -> Iterator[int]:
        return iter(self.subs)

    def __len__(self) -> int:
        return len(self.subs)


def _sampled(ctx: ValidatorContext, pages: list[int], seed: int) -> list[Tensor]:
    batches = page_batches(ctx.corpus, ctx.tokenizer, pages, ctx.cfg.data)
    return sample_batches(batches, ctx.cfg.scoring.sample_rate, seed)


def _random_batches(ctx: ValidatorContext, plan: WindowPlan) -> list[Tensor]:
    """The window's shared random batches (`shared_random_batches`, ours)."""
    n_pages = ctx.corpus.n_pages(ctx.cfg.data.rows_per_page)
    return _sampled(ctx, random_pages(plan.seed, ctx.cfg.scoring.random_pages, n_pages), plan.seed)


def random_baseline(ctx: ValidatorContext, plan: WindowPlan) -> float | None:
    """L_rand_before of the window (None when every peer has its own random batches)."""
    if not ctx.cfg.scoring.shared_random_batches:
        return None
    evaluator = LossEvaluator(ctx.model, ctx.device)
    return evaluator.mean_loss(evaluator.theta, _random_batches(ctx, plan)).item()


def score_submissions(ctx: ValidatorContext, plan: WindowPlan, subs: Mapping[int, Submission],
                      rand_before: float | None = None) -> dict[int, PeerLosses]:
    """Losses of each peer's step on its own pages and on the window's random pages."""
    cfg = ctx.cfg
    n_pages = ctx.corpus.n_pages(cfg.data.rows_per_page)
    own = {u: _sampled(ctx, own_pages(u, plan.window, ctx.corpus, cfg), plan.seed + u) for u in subs}
    if cfg.scoring.shared_random_batches:
        rand = _random_batches(ctx, plan)
    else:
        rand = {u: _sampled(ctx, random_pages(plan.seed + u, cfg.scoring.random_pages, n_pages), plan.seed + u)
                for u in subs}
    evaluator = LossEvaluator(ctx.model, ctx.device)
    return score_peers(evaluator, _LazyDeltas(ctx, subs), own, rand, cfg.scoring.eval_lr_factor * plan.lr,
                       rand_before)


@dataclass(frozen=True)
class Evaluation:
    losses: dict[int, PeerLosses]
    scores: dict[int, PeerScore]


def evaluate(ctx: ValidatorContext, plan: WindowPlan, subs: Mapping[int, Submission],
             rand_before: float | None = None) -> Evaluation:
    losses = score_submissions(ctx, plan, subs, rand_before)
    scores = {u: PeerScore(l.gradient_score, l.own_improvement,
                                indicator(l.own_improvement, l.gradient_score, ctx.cfg.uniqueness.own_margin))
              for u, l in losses.items()}
    return Evaluation(losses, scores)
