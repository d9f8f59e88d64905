"""Ratings and final scores: one OpenSkill Plackett-Luce match per window, then penalties.

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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace

from openskill.models import PlackettLuce

from gauntlet.config import GauntletConfig, RatingConfig
from gauntlet.verdicts import INVALID_FILE, Reason, Verdict

_MISSING = frozenset({Reason.MISSING, Reason.TOO_EARLY, Reason.TOO_LATE})


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

    @property
    def ordinal(self) -> float:
        return self.mu - 3.0 * self.sigma

    @staticmethod
    def new(uid: int, cfg: RatingConfig) -> PeerState:
        return PeerState(uid=uid, mu=cfg.mu, sigma=cfg.sigma)

    @staticmethod
    def from_row(row: Mapping[str, object]) -> PeerState:
        """Rebuild from a `ratings` audit row (the state after a window)."""
        names = PeerState.__dataclass_fields__
        return PeerState(**{k: row[k] for k in names if k in row})  # type: ignore[arg-type]


@dataclass(frozen=True)
class ValidatorState:
    """Everything the validator carries from one window to the next."""

    last_window: int | None = None
    peers: Mapping[int, PeerState] = field(default_factory=dict)
    gather_schedule: tuple[tuple[int, tuple[int, ...]], ...] = ()
    """(first window it applies to, uids) pairs, oldest first."""

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
    """Stage 2 and uniqueness results of one evaluated peer."""

    gradient_score: float
    own_improvement: float
    indicator: int


@dataclass(frozen=True)
class WindowOutcome:
    window: int
    verdicts: Mapping[int, Verdict]
    scores: Mapping[int, PeerScore]
    sync_scores: Mapping[int, float]
    copy_actions: Mapping[int, str] = field(default_factory=dict)
    """uid -> "halve" | "reset" | "identical" | "ban" (from uniqueness.find_copies)."""


@dataclass(frozen=True)
class PeerRecord:
    """One row of the `ratings` table: the peer's state after the window, and why."""

    state: PeerState
    before: PeerState
    rated_in_match: bool
    penalties: tuple[str, ...]

    def row(self, window: int) -> dict[str, object]:
        out: dict[str, object] = {"window_id": window, **asdict(self.state)}
        out.update(
            ordinal=self.state.ordinal,
            penalties=list(self.penalties),
            rated_in_match=self.rated_in_match,
            mu_before=self.before.mu,
            sigma_before=self.before.sigma,
            final_score_before=self.before.final_score,
        )
        return out


def rating_model(cfg: RatingConfig) -> PlackettLuce:
    return PlackettLuce(mu=cfg.mu, sigma=cfg.sigma, beta=cfg.beta, tau=cfg.tau)


def play_match(peers: Mapping[int, PeerState], scores: Mapping[int, float], cfg: RatingConfig) -> dict[int, PeerState]:
    """One Plackett-Luce match among the scored peers, ranked by gradient score (higher wins).

    Fewer than two players: no match (openskill refuses one team), ratings unchanged.
    """
    uids = sorted(scores)
    if len(uids) < 2:
        return {}
    model = rating_model(cfg)
    teams = [[model.rating(mu=peers[u].mu, sigma=peers[u].sigma, name=str(u))] for u in uids]
    rated = model.rate(teams, scores=[scores[u] for u in uids])
    return {u: replace(peers[u], mu=team[0].mu, sigma=team[0].sigma) for u, team in zip(uids, rated)}


def update_moving_average(B: float, b: int, ema: float = 0.95) -> float:
    """B <- ema * B + (1 - ema) * b."""
    if b not in (-1, 1):
        raise ValueError(f"the indicator b must be +1 or -1, got {b}")
    if not 0 <= ema < 1:
        raise ValueError(f"ema must be in [0, 1), got {ema}")
    return ema * B + (1 - ema) * b


def _shrink(value: float, factor: float) -> float:
    return value * factor if value > 0 else value


def _penalise(peer: PeerState, verdict: Verdict | None, copy_action: str | None, window: int,
              cfg: GauntletConfig) -> tuple[PeerState, list[str]]:
    """Apply this window's penalties to a peer whose match result is already in."""
    notes: list[str] = []
    p = cfg.penalty
    reason = verdict.reason if verdict else None
    if reason in _MISSING:
        peer = replace(peer, final_score=_shrink(peer.final_score, p.missing),
                       moving_average=_shrink(peer.moving_average, p.missing),
                       inactive_windows=peer.inactive_windows + 1)
        notes.append(f"{reason} x{p.missing}")
    elif reason is Reason.INTERNAL_ERROR:  # our fault: no cut, but unverified work is not activity
        peer = replace(peer, inactive_windows=peer.inactive_windows + 1)
        notes.append("internal error: no penalty (the validator's fault), counts as inactive")
    elif reason is not None:
        peer = replace(peer, inactive_windows=0)
    if reason in INVALID_FILE:
        peer = replace(peer, final_score=0.0, moving_average=_shrink(peer.moving_average, p.missing))
        notes.append(f"{reason}: final score reset, B x{p.missing}")
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
    return peer, notes


def _final_score(peer: PeerState) -> float:
    return peer.ordinal * max(0.0, peer.moving_average) * peer.sync_score


def advance(state: ValidatorState, outcome: WindowOutcome, cfg: GauntletConfig) -> tuple[ValidatorState, list[PeerRecord]]:
    """The state after one window, and one record per known peer (for the audit tables)."""
    window = outcome.window
    before = {u: state.peer(u, cfg.rating) for u in set(state.peers) | set(outcome.verdicts)}
    peers = dict(before)
    for uid, score in outcome.scores.items():
        b = update_moving_average(peers[uid].moving_average, score.indicator, cfg.uniqueness.ema)
        peers[uid] = replace(peers[uid], moving_average=b, last_evaluated_window=window)
    for uid, sync in outcome.sync_scores.items():
        peers[uid] = replace(peers[uid], sync_score=sync)
    matched = play_match(peers, {u: s.gradient_score for u, s in outcome.scores.items()}, cfg.rating)
    for uid, rated in matched.items():
        peers[uid] = replace(rated, final_score=_final_score(rated))
    records: list[PeerRecord] = []
    next_peers: dict[int, PeerState] = {}
    for uid in sorted(peers):
        peer, notes = _penalise(peers[uid], outcome.verdicts.get(uid), outcome.copy_actions.get(uid), window, cfg)
        if peer.inactive_windows >= cfg.penalty.reset_after:
            peer = PeerState.new(uid, cfg.rating)
            notes.append(f"inactive {cfg.penalty.reset_after} windows: rating deleted")
        records.append(PeerRecord(peer, before[uid], uid in matched, tuple(notes)))
        next_peers[uid] = peer
    return replace(state, last_window=window, peers=next_peers), records


def is_banned(peer: PeerState | None, window: int) -> bool:
    return peer is not None and peer.banned_until is not None and window < peer.banned_until
