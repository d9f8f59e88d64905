"""Ratings and final scores: one OpenSkill Plackett-Luce match per window, then penalties.

The match itself, with the anchor player of `rating.anchor` (ours), is `gauntlet.match`: the final
score then uses each peer's ordinal less the anchor's, whose (mu, sigma) is part of the state
(`ValidatorState.anchor`).

The validator's running state is a plain value (``ValidatorState``) advanced by a pure function
(``advance``) from one window's outcome. Nothing lives on a long-lived object, so a replay or a
restart rebuilds the same state from the audit tables (``PeerState.from_row``).

Penalty rules (GAUNTLET.md "Ratings and the final score"); penalties multiply positive values only:
- missing / too early / too late: ``F *= 0.75``, ``B *= 0.75``, and the peer counts as inactive
  for the window; after ``reset_after`` such windows in a row its rating is deleted. The
  reference applied a "missing gather file" and an "inactive" multiplier separately for what is,
  in a window flow that fetches every peer, the same event; we apply it once.
- malformed / non-finite file from a peer that would have been evaluated: ``F = 0``, ``B *= 0.75``.
- failed sync: ``F *= 0.75``, ``B *= 0.75``.
- copies (top-k overlap): ``halve`` -> ``F *= 0.5`` (still rated); ``reset``/``identical`` ->
  ``F = 0``; ``ban`` -> ``F = 0`` and barred for ``ban_windows``.
- validator or infrastructure faults: nothing (ours). An internal error while handling the
  peer's data (window/guard.py): no cut, but the window counts towards the inactivity clock.

The reference's later rules (`cfg.rules`, all off unless the `templar-2026` preset) hook in at
three points, each in a helper below: before the match (bars, missing-file history, escalating
cuts, the missing files' place in the match), in the final score (uniqueness floor), and after
every penalty of the window (negative evaluations). With every rule off, `advance` computes
exactly what it did without them. What fired is kept per peer in `PeerRecord.rules_fired`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace

from gauntlet.config import GauntletConfig, RatingConfig
from gauntlet.match import Anchor, anchor_ordinal, anchored_match
from gauntlet.rules import penalties as rules
from gauntlet.rules.tracker import RuleTracker, record_evaluation, record_file
from gauntlet.verdicts import INVALID_FILE, Reason, Verdict

_MISSING = frozenset({Reason.MISSING, Reason.TOO_EARLY, Reason.TOO_LATE, Reason.UNTRUSTED_TIME})


@dataclass(frozen=True)
class PeerState:
    uid: int
    mu: float
    sigma: float
    moving_average: float = 0.0
    """B: moving average of the uniqueness indicator (starts at 0)."""
    sync_score: float = 1.0
    final_score: float = 0.0
    inactive_windows: int = 0
    last_evaluated_window: int | None = None
    banned_until: int | None = None
    tracker: RuleTracker = RuleTracker()
    """Memory of the 2026 rules (histories of missing files and negative evaluations)."""

    @property
    def ordinal(self) -> float:
        return self.mu - 3.0 * self.sigma

    @staticmethod
    def new(uid: int, cfg: RatingConfig) -> PeerState:
        return PeerState(uid=uid, mu=cfg.mu, sigma=cfg.sigma)

    @staticmethod
    def from_row(row: Mapping[str, object]) -> PeerState:
        """Rebuild from a `ratings` audit row (the state after a window)."""
        names = set(PeerState.__dataclass_fields__) - {"tracker"}
        values = {k: row[k] for k in names if k in row}
        return PeerState(**values, tracker=RuleTracker.from_row(row))  # type: ignore[arg-type]


@dataclass(frozen=True)
class ValidatorState:
    """Everything the validator carries from one window to the next."""

    last_window: int | None = None
    peers: Mapping[int, PeerState] = field(default_factory=dict)
    gather_schedule: tuple[tuple[int, tuple[int, ...]], ...] = ()
    """(first window it applies to, uids) pairs, oldest first."""
    sync_ema: str = ""
    """The 2026 sync rule's EMA of the validator's parameter changes, as JSON ("" when unused)."""
    anchor: Anchor | None = None
    """(mu, sigma) of the anchor player (rating.anchor, ours); None until it first plays."""

    def anchor_ordinal(self, cfg: RatingConfig) -> float:
        """What the final score subtracts from each peer's ordinal (`match.anchor_ordinal`)."""
        return anchor_ordinal(self.anchor, cfg)

    def peer(self, uid: int, cfg: RatingConfig) -> PeerState:
        return self.peers.get(uid) or PeerState.new(uid, cfg)

    def gather_for(self, window: int) -> tuple[int, ...] | None:
        """The aggregation set in force for `window`, or None before the first is chosen."""
        chosen = None
        for effective, uids in self.gather_schedule:
            if effective <= window:
                chosen = uids
        return chosen


@dataclass(frozen=True)
class PeerScore:
    """Stage 2 and uniqueness results of one evaluated peer.

    A peer left screened (`gauntlet.screening`, ours) has a calibrated estimate as its gradient
    score and no own-data losses: `own_improvement` and `indicator` are None, and B is left as
    it was (no evidence either way this window); it still plays the match.
    """

    gradient_score: float
    own_improvement: float | None
    indicator: int | None


@dataclass(frozen=True)
class WindowOutcome:
    window: int
    verdicts: Mapping[int, Verdict]
    scores: Mapping[int, PeerScore]
    sync_scores: Mapping[int, float]
    copy_actions: Mapping[int, str] = field(default_factory=dict)
    """uid -> "halve" | "reset" | "identical" | "ban" (from uniqueness.find_copies)."""
    gather_success: float | None = None
    """Share of the window's gather set whose file arrived; None: computed from the gather set in
    force and the verdicts (rules.gather_success_rate). Only the 2026 missing-file cut reads it."""


@dataclass(frozen=True)
class PeerRecord:
    """One row of the `ratings` table: the peer's state after the window, and why."""

    state: PeerState
    before: PeerState
    rated_in_match: bool
    penalties: tuple[str, ...]
    rules_fired: tuple[str, ...] = ()
    """The 2026 rules that fired for this peer in the window, in words (for `gauntlet explain`)."""
    window_score: float | None = None
    """This window's score before smoothing (weights.score_ema) and penalties; None: not in the match.
    The gather list takes only peers whose window score is positive (window/rate.py)."""

    def row(self, window: int) -> dict[str, object]:
        state = {k: v for k, v in asdict(self.state).items() if k != "tracker"}
        out: dict[str, object] = {"window_id": window, **state, **self.state.tracker.to_row()}
        out.update(
            rules_fired=list(self.rules_fired),
            ordinal=self.state.ordinal,
            penalties=list(self.penalties),
            rated_in_match=self.rated_in_match,
            mu_before=self.before.mu,
            sigma_before=self.before.sigma,
            final_score_before=self.before.final_score,
        )
        return out


def update_moving_average(B: float, b: int, ema: float = 0.95) -> float:
    """B <- ema * B + (1 - ema) * b; b = 0 (the sequential own-data test undecided) decays B toward 0."""
    if b not in (-1, 0, 1):
        raise ValueError(f"the indicator b must be +1, 0 or -1, got {b}")
    if not 0 <= ema < 1:
        raise ValueError(f"ema must be in [0, 1), got {ema}")
    return ema * B + (1 - ema) * b


def _shrink(value: float, factor: float) -> float:
    return value * factor if value > 0 else value


def _penalise(peer: PeerState, verdict: Verdict | None, copy_action: str | None, window: int,
              cfg: GauntletConfig, cut: float | None = None) -> tuple[PeerState, list[str]]:
    """Apply this window's penalties to a peer whose match result is already in.

    `cut`: the 2026 rules' factor for a missing or invalid file, in place of `penalty.missing`.
    """
    notes: list[str] = []
    p = cfg.penalty
    missing = p.missing if cut is None else cut
    reason = verdict.reason if verdict else None
    if reason in _MISSING:
        peer = replace(peer, final_score=_shrink(peer.final_score, missing),
                       moving_average=_shrink(peer.moving_average, missing),
                       inactive_windows=peer.inactive_windows + 1)
        notes.append(f"{reason} x{missing}")
    elif reason is Reason.INTERNAL_ERROR:  # our fault: no cut, but unverified work is not activity
        peer = replace(peer, inactive_windows=peer.inactive_windows + 1)
        notes.append("internal error: no penalty (the validator's fault), counts as inactive")
    elif reason is not None:
        peer = replace(peer, inactive_windows=0)
    if reason in INVALID_FILE:
        peer = replace(peer, final_score=0.0, moving_average=_shrink(peer.moving_average, missing))
        notes.append(f"{reason}: final score reset, B x{missing}")
    if reason is Reason.DESYNCED:
        peer = replace(peer, final_score=_shrink(peer.final_score, p.desynced),
                       moving_average=_shrink(peer.moving_average, p.desynced))
        notes.append(f"desynced x{p.desynced}")
    if copy_action == "halve":
        peer = replace(peer, final_score=_shrink(peer.final_score, 0.5))
        notes.append("top-k overlap: final score x0.5")
    elif copy_action in ("reset", "identical", "ban"):
        peer = replace(peer, final_score=0.0)
        notes.append(f"copy ({copy_action}): final score reset")
    if copy_action == "ban":
        peer = replace(peer, banned_until=window + cfg.uniqueness.ban_windows)
        notes.append(f"barred until window {window + cfg.uniqueness.ban_windows}")
    if reason is Reason.BANNED:
        peer = replace(peer, final_score=0.0)
    if cut is not None:
        peer = replace(peer, final_score=rules.zero_small(peer.final_score, cfg.rules))
    return peer, notes


def window_score(ordinal: float, bma: float, sync: float, own_data: str = "scale") -> float:
    """This window's score of a peer in the match, from its ordinal, B (already max(0, B), and
    floored by the 2026 rule) and sync: ordinal x B x sync (`scale`, paper), or ordinal x sync
    while B > 0 and 0 otherwise (`gate`, ours: weights.own_data)."""
    if own_data not in ("scale", "gate"):
        raise ValueError(f"own_data must be 'scale' or 'gate', got {own_data!r}")
    own = (1.0 if bma > 0 else 0.0) if own_data == "gate" else bma
    return ordinal * own * sync


def smoothed_score(before: float, now: float, ema: float) -> float:
    """F = ema x F_before + (1 - ema) x this window's score (weights.score_ema; paper: ema 0)."""
    if not 0 <= ema < 1:
        raise ValueError(f"score_ema must be in [0, 1), got {ema}")
    return now if ema == 0 else ema * before + (1 - ema) * now


def _window_score(peer: PeerState, window: int, cfg: GauntletConfig, fired: list[str], offset: float = 0.0) -> float:
    """`window_score` of the peer's ordinal less `offset` (the anchor's ordinal; 0 without it)."""
    bma, why = rules.floored_average(peer.moving_average, window, cfg.chain.start_window, cfg.rules)
    if why:
        fired.append(why)
    return window_score(peer.ordinal - offset, bma, peer.sync_score, cfg.weights.own_data)


def _files_before_match(peers: dict[int, PeerState], outcome: WindowOutcome, state: ValidatorState,
                        match: dict[int, float], fired: dict[int, list[str]], cfg: GauntletConfig) -> dict[int, float]:
    """Bars, missing-file history, naughty list and escalating cuts; missing files join the match.

    Runs before the match, as the reference's `slash_from_overlap` and `slash_for_missing_gradients`
    ran before its evaluations, so a naughty peer reset here is rated afresh at the penalty score.
    Updates `peers` and `match` in place; returns each missing peer's cut for `_penalise`.
    """
    r, window, cuts = cfg.rules, outcome.window, {}
    success = outcome.gather_success
    if success is None:
        success = rules.gather_success_rate(state.gather_for(window), outcome.verdicts)
    for uid in sorted(outcome.verdicts):
        peer = peers[uid]
        if r.reset_barred and is_banned(peer, window):
            peers[uid] = replace(PeerState.new(uid, cfg.rating), banned_until=peer.banned_until)
            fired[uid].append(f"barred until window {peer.banned_until}: rating and histories reset")
            continue
        event = rules.file_event(outcome.verdicts[uid])
        if event is None or not (r.naughty or r.escalating_missing):
            if event and r.missing_in_match:
                match[uid] = r.missing_score
            continue
        peer = replace(peer, tracker=record_file(peer.tracker, event, r))
        why = rules.naughty(peer.tracker, r) if event else None
        if why:
            until = window + 1 + r.naughty_windows
            reset = peer.final_score > 0
            peer = replace(PeerState.new(uid, cfg.rating) if reset else peer, banned_until=until)
            fired[uid].append(why + (": positive score reset" if reset else ""))
            cuts[uid] = 1.0
        elif event and r.escalating_missing:
            cuts[uid], phrase = rules.missing_cut(peer.tracker, success, r)
            fired[uid].append(phrase)
        if event and r.missing_in_match:
            match[uid] = r.missing_score
        peers[uid] = peer
    return cuts


def _negatives_after(peers: dict[int, PeerState], outcome: WindowOutcome, match: Mapping[int, float],
                     fired: dict[int, list[str]], cfg: GauntletConfig) -> None:
    """Negative-evaluation history, cut and gather exclusion, once the whole window is scored.

    Like the reference's `apply_negative_evaluation_penalties`, the cut looks at every peer with a
    history, not only this window's: a peer not evaluated again is cut again each window (the
    compounding noted in REFERENCE-2026.md 1.10, kept so replays match what it paid).
    """
    r = cfg.rules
    for uid, score in outcome.scores.items():
        peer = peers[uid]
        was_out = rules.excluded_from_gather(peer.tracker, r)
        peers[uid] = replace(peer, tracker=record_evaluation(peer.tracker, score.gradient_score, r))
        if was_out and not rules.excluded_from_gather(peers[uid].tracker, r):
            fired[uid].append("back in the gather set: positive evaluation")
    skip = rules.skip_negative_penalties(match, r)
    for uid, peer in peers.items():
        why = rules.negative_cut(peer.tracker, r)
        if why and skip:
            fired[uid].append(f"not applied ({why}): the window's rank-{r.skip_rank} score is negative")
        elif why and peer.final_score > 0:
            factor = r.negative_factor
            peers[uid] = replace(peer, final_score=rules.zero_small(peer.final_score * factor, r),
                                 moving_average=_shrink(peer.moving_average, factor))
            fired[uid].append(why)
        excluded = rules.excluded_from_gather(peers[uid].tracker, r)
        if excluded:
            fired[uid].append(excluded)


def advance(state: ValidatorState, outcome: WindowOutcome, cfg: GauntletConfig) -> tuple[ValidatorState, list[PeerRecord]]:
    """The state after one window, and one record per known peer (for the audit tables)."""
    window, r = outcome.window, cfg.rules
    before = {u: state.peer(u, cfg.rating) for u in set(state.peers) | set(outcome.verdicts)}
    peers = dict(before)
    fired: dict[int, list[str]] = {u: [] for u in peers}
    for uid, score in outcome.scores.items():
        b = peers[uid].moving_average if score.indicator is None else \
            update_moving_average(peers[uid].moving_average, score.indicator, cfg.uniqueness.ema)
        peers[uid] = replace(peers[uid], moving_average=b, last_evaluated_window=window)
    for uid, sync in outcome.sync_scores.items():
        peers[uid] = replace(peers[uid], sync_score=sync)
    evaluated = {u: s.gradient_score for u, s in outcome.scores.items()}
    match = dict(evaluated)  # the 2026 rules may add missing files to the match, never to `evaluated`
    cuts = _files_before_match(peers, outcome, state, match, fired, cfg)
    matched, anchor = anchored_match(peers, match, evaluated, state.anchor, cfg.rating)
    offset = anchor_ordinal(anchor, cfg.rating)
    now: dict[int, float] = {}
    for uid, rated in matched.items():
        now[uid] = _window_score(rated, window, cfg, fired[uid], offset)
        peers[uid] = replace(rated, final_score=smoothed_score(rated.final_score, now[uid], cfg.weights.score_ema))
    notes: dict[int, list[str]] = {}
    for uid in sorted(peers):
        verdict, copy = outcome.verdicts.get(uid), outcome.copy_actions.get(uid)
        peers[uid], notes[uid] = _penalise(peers[uid], verdict, copy, window, cfg, cuts.get(uid))
    if r.negative_cut or r.exclude_negative:
        _negatives_after(peers, outcome, match, fired, cfg)
    records: list[PeerRecord] = []
    next_peers: dict[int, PeerState] = {}
    for uid in sorted(peers):
        peer = peers[uid]
        if peer.inactive_windows >= cfg.penalty.reset_after:
            peer = PeerState.new(uid, cfg.rating)
            notes[uid].append(f"inactive {cfg.penalty.reset_after} windows: rating deleted")
        records.append(PeerRecord(peer, before[uid], uid in matched, tuple(notes[uid]), tuple(fired[uid]),
                                  now.get(uid)))
        next_peers[uid] = peer
    return replace(state, last_window=window, peers=next_peers, anchor=anchor), records


def is_banned(peer: PeerState | None, window: int) -> bool:
    return peer is not None and peer.banned_until is not None and window < peer.banned_until
