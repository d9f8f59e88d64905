"""Per-peer memory of the 2026 rules, kept in the `ratings` audit rows.

The reference held these in validator attributes (`missing_gradient_history`,
`consecutive_missing_gradient_count`, `peer_eval_history`, `consecutive_negative_count`) and never
saved them, so a restart forgave escalating peers (REFERENCE-2026.md 1.9). Here they are part of
the peer's state after each window and written with it, so `PeerState.from_row` restores them.
The naughty list needs no column of its own: it is the peer's `banned_until`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gauntlet.config import RulesConfig


@dataclass(frozen=True)
class RuleTracker:
    miss_history: tuple[bool, ...] = ()
    """The last `rules.miss_history` windows the peer owed a file, oldest first; True = missing or invalid."""
    consecutive_misses: int = 0
    """Missing or invalid files in a row (reset by a file that arrives)."""
    negative_history: tuple[bool, ...] = ()
    """The last `rules.negative_history` evaluations, oldest first; True = negative gradient score."""
    consecutive_negatives: int = 0
    """Negative evaluations in a row (reset by a positive one)."""

    def __post_init__(self) -> None:
        if self.consecutive_misses < 0 or self.consecutive_negatives < 0:
            raise ValueError(
                f"tracker counts must be >= 0, got {self.consecutive_misses}, {self.consecutive_negatives}")

    def to_row(self) -> dict[str, object]:
        """The tracker's columns of a `ratings` row (lists, as Arrow stores them)."""
        return {"miss_history": list(self.miss_history), "consecutive_misses": self.consecutive_misses,
                "negative_history": list(self.negative_history),
                "consecutive_negatives": self.consecutive_negatives}

    @staticmethod
    def from_row(row: Mapping[str, object]) -> RuleTracker:
        """Rebuild from a `ratings` row; rows written before these columns existed give an empty tracker."""
        def flags(name: str) -> tuple[bool, ...]:
            value = row.get(name)
            if value is None:
                return ()
            if not isinstance(value, list | tuple) or not all(isinstance(v, bool) for v in value):
                raise ValueError(f"ratings.{name} must be a list of booleans, got {value!r}")
            return tuple(value)

        def count(name: str) -> int:
            value = row.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"ratings.{name} must be an integer, got {value!r}")
            return value or 0

        return RuleTracker(flags("miss_history"), count("consecutive_misses"),
                           flags("negative_history"), count("consecutive_negatives"))


def record_file(tracker: RuleTracker, missing: bool, cfg: RulesConfig) -> RuleTracker:
    """One window's file event (reference: `slash_for_missing_gradients` appends True and counts up;
    the gathered peers append False and reset the count, in `Validator.run`)."""
    history = (*tracker.miss_history, missing)[-cfg.miss_history:]
    streak = tracker.consecutive_misses + 1 if missing else 0
    return RuleTracker(history, streak, tracker.negative_history, tracker.consecutive_negatives)


def record_evaluation(tracker: RuleTracker, gradient_score: float, cfg: RulesConfig) -> RuleTracker:
    """One evaluation (reference: `Validator.track_negative_evaluation`); negative means score < 0."""
    negative = gradient_score < 0
    history = (*tracker.negative_history, negative)[-cfg.negative_history:]
    streak = tracker.consecutive_negatives + 1 if negative else 0
    return RuleTracker(tracker.miss_history, tracker.consecutive_misses, history, streak)
