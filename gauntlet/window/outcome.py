"""Stages "ratings" and "weights": the window's outcome folded into the validator's state."""

from __future__ import annotations

from dataclasses import dataclass

from gauntlet.config import GauntletConfig
from gauntlet.ratings import PeerRecord, ValidatorState, WindowOutcome, advance
from gauntlet.weights import choose_gather, power_normalise, schedule_gather
from gauntlet.verdicts import Verdict
from gauntlet.window.checks import FilterResult
from gauntlet.window.evaluate import Evaluation


@dataclass(frozen=True)
class Rated:
    state: ValidatorState
    records: list[PeerRecord]
    weights: dict[int, float]


def rate_window(state: ValidatorState, window: int, verdicts: dict[int, Verdict], filtered: FilterResult,
                evaluation: Evaluation, cfg: GauntletConfig) -> Rated:
    outcome = WindowOutcome(
        window=window, verdicts=verdicts, scores=evaluation.scores,
        sync_scores=filtered.sync, copy_actions={u: f.action for u, f in filtered.copies.items()},
    )
    new_state, records = advance(state, outcome, cfg)
    weights = power_normalise({r.state.uid: r.state.final_score for r in records}, cfg.weights)
    gather = choose_gather(weights, new_state.peers, {u for u, v in verdicts.items() if v.ok}, cfg.aggregation)
    new_state = schedule_gather(new_state, window, gather, cfg.chain, cfg.aggregation)
    return Rated(new_state, records, weights)
