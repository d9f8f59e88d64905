"""The 2026 rules on one window, as pure functions of the tracker, the window and the settings.

Each function that can fire returns the phrase `gauntlet explain` shows (None when it does not
fire). The source of each rule is named in its docstring: one-covenant/templar v2.1.28,
`neurons/validator.py`, class `Validator`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gauntlet.config import RulesConfig
from gauntlet.rules.tracker import RuleTracker
from gauntlet.verdicts import Reason, Verdict

MISSING_FILE = frozenset({Reason.MISSING, Reason.TOO_EARLY, Reason.TOO_LATE, Reason.UNTRUSTED_TIME,
                          Reason.MALFORMED, Reason.NON_FINITE, Reason.EQUIVOCATED})
"""No usable file: the reference's gather skipped these (`skipped_uids`), or it found them invalid."""
FILE_ARRIVED = frozenset({Reason.OK, Reason.DESYNCED, Reason.COPIED})
"""A file that parsed: the reference's gather counted it as gathered (sync and copies are judged apart)."""
_ORDINALS = ("first", "second", "third")


def file_event(verdict: Verdict | None) -> bool | None:
    """True: missing or invalid file; False: a file arrived; None: no event (faults, bars, no verdict).

    Validator and infrastructure faults are no event at all (ours, as everywhere in Gauntlet).
    """
    if verdict is None:
        return None
    if verdict.reason in MISSING_FILE:
        return True
    if verdict.reason in FILE_ARRIVED:
        return False
    return None


def gather_success_rate(gather: Sequence[int] | None, verdicts: Mapping[int, Verdict]) -> float | None:
    """Share of the window's gather set whose file arrived (reference: `gather_result.success_rate`,
    gathered / requested, from `tplr.comms.Comms.gather`). None before the first gather set."""
    if not gather:
        return None
    arrived = sum(1 for uid in gather if file_event(verdicts.get(uid)) is False)
    return arrived / len(gather)


def naughty(tracker: RuleTracker, cfg: RulesConfig) -> str | None:
    """Missing in at least `naughty_ratio` of a full history (reference: the "mega slash" in
    `Validator.slash_for_missing_gradients`: `len(history) >= 8 and missing_ratio >= 0.5`)."""
    history = tracker.miss_history
    if not cfg.naughty or len(history) < cfg.miss_history:
        return None
    missed = sum(history)
    if missed / len(history) < cfg.naughty_ratio:
        return None
    return f"naughty list for {cfg.naughty_windows} windows: missing in {missed} of the last {len(history)} windows"


def missing_cut(tracker: RuleTracker, success: float | None, cfg: RulesConfig) -> tuple[float, str]:
    """The escalating cut of a missing or invalid file and its phrase (reference:
    `Validator.slash_for_missing_gradients`: x0 when `success_rate < gather_peers_slash_threshold`,
    else 0.75, 0.5, then 0 by consecutive misses). `tracker` already counts this window's miss."""
    if success is not None and success < cfg.gather_success_floor:
        return 0.0, (f"cut x0: missing file while the window's gather success was {success:.0%} "
                     f"(under {cfg.gather_success_floor:.0%})")
    streak = max(1, tracker.consecutive_misses)
    factor = cfg.missing_cuts[min(streak, len(cfg.missing_cuts)) - 1]
    nth = _ORDINALS[streak - 1] if streak <= len(_ORDINALS) else f"{streak}th"
    return factor, f"cut x{factor:g}: {nth} missing file in a row"


def skip_negative_penalties(match_scores: Mapping[int, float], cfg: RulesConfig) -> bool:
    """The bad-window guard (reference: `Validator.should_skip_negative_penalty`): skip when the
    `skip_rank`-th best match score (or the lowest, with fewer players) is negative. The match scores
    include the missing files' penalty score, as the reference's `current_window_scores` did."""
    if not match_scores:
        return False
    ranked = sorted(match_scores.values(), reverse=True)
    return ranked[min(cfg.skip_rank, len(ranked)) - 1] < 0


def negative_cut(tracker: RuleTracker, cfg: RulesConfig) -> str | None:
    """More than `negative_ratio` negative in the last `negative_history` evaluations (reference:
    `Validator.apply_negative_evaluation_penalties`, which needs 8 evaluations and cuts x0.25)."""
    history = tracker.negative_history[-cfg.negative_history:]
    if not cfg.negative_cut or len(history) < cfg.negative_history:
        return None
    negatives = sum(history)
    if negatives / len(history) <= cfg.negative_ratio:
        return None
    return f"cut x{cfg.negative_factor:g}: {negatives} of the last {len(history)} evaluations negative"


def excluded_from_gather(tracker: RuleTracker, cfg: RulesConfig) -> str | None:
    """`negative_streak` negative evaluations in a row keep the peer out of the gather set until a
    positive one (reference: `Validator.should_exclude_from_gather`, read by `select_next_peers`).

    The reference also checked the bad-window guard there, but by then the window's scores had been
    cleared (`update_openskill_ratings` empties `current_window_scores`), so the guard never held an
    exclusion back; we follow what it did: the streak alone decides.
    """
    if not cfg.exclude_negative or tracker.consecutive_negatives < cfg.negative_streak:
        return None
    return f"excluded from gather: {tracker.consecutive_negatives} negative evaluations in a row"


def floored_average(moving_average: float, window: int, start_window: int,
                    cfg: RulesConfig) -> tuple[float, str | None]:
    """max(0, B), or 0 once the network is `floor_after` windows old and B < `floor` (reference:
    `Validator.update_openskill_ratings`, `bma_threshold` after `bma_warmup_windows`)."""
    bma = max(0.0, moving_average)
    if not cfg.uniqueness_floor or window - start_window < cfg.floor_after or bma >= cfg.floor:
        return bma, None
    return 0.0, f"final score 0: moving average {moving_average:.3f} under the floor {cfg.floor:g}"


def zero_small(final_score: float, cfg: RulesConfig) -> float:
    """A positive score cut under `zero_below` becomes 0 (reference: `score_zero_threshold`, 1e-4)."""
    return 0.0 if 0 < final_score < cfg.zero_below else final_score
