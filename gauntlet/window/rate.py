"""Stage "rate": the window's outcome folded into the validator's state, then the weights.

One OpenSkill match among the evaluated peers, final scores, penalties (gauntlet/ratings.py),
weights (power-normalised, or the 2026 ramp), and the next gather list scheduled
(gauntlet/weights.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from gauntlet.config import GauntletConfig
from gauntlet.ratings import PeerRecord, ValidatorState, WindowOutcome, advance
from gauntlet.verdicts import Verdict
from gauntlet.weights import choose_gather, compute_weights, gather_exclusions, schedule_gather
from gauntlet.window.evaluate import Evaluated
from gauntlet.window.filter import Filtered


@dataclass(frozen=True)
class Rated:
    """Result of stage "rate"."""

    state: ValidatorState
    """The validator's state after the window (what the next window starts from)."""
    records: list[PeerRecord]
    weights: dict[int, float]
    verdicts: dict[int, Verdict]
    """The window's final verdicts: stage 1's, replaced by stage 2's where scoring rejected a peer."""
    first_seen: frozenset[int] = frozenset()
    """Peers the validator had no state for before this window (their `*_before` are null)."""


def run(cfg: GauntletConfig, window: int, state: ValidatorState, filtered: Filtered, evaluated: Evaluated) -> Rated:
    verdicts = {**filtered.verdicts, **evaluated.verdicts}
    outcome = WindowOutcome(
        window=window, verdicts=verdicts, scores=evaluated.scores,
        sync_scores=filtered.sync, copy_actions={u: f.action for u, f in filtered.copies.items()},
    )
    new_state, records = advance(state, outcome, cfg)
    weights = compute_weights({r.state.uid: r.state.final_score for r in records}, cfg)
    # A smoothed F (weights.score_ema) stays positive for a while after a peer's window score
    # turns <= 0: that still pays it, less, but does not earn its file a place by weight. (With
    # score_ema 0 such a peer has weight 0 already: the mask changes nothing.)
    lapsed = {r.state.uid for r in records if r.window_score is not None and r.window_score <= 0}
    by_weight = {u: 0.0 if u in lapsed else w for u, w in weights.items()}
    gather = choose_gather(by_weight, new_state.peers, {u for u, v in verdicts.items() if v.ok}, cfg.aggregation,
                           excluded=gather_exclusions(new_state.peers, cfg.rules))
    new_state = schedule_gather(new_state, window, gather, cfg.chain, cfg.aggregation)
    return Rated(new_state, records, weights, verdicts, frozenset(set(verdicts) - set(state.peers)))
