"""The validator's running state, rebuilt from the audit tables.

After a restart, a replay or on a new process of a Prefect worker, the state before window W is
the `ratings` snapshot and the gather schedule of the newest window recorded before W. The one
other source is a join: a validator that started from another validator's published checkpoint
(`gauntlet join`) starts from the state published with it, until its own tables take over.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from gauntlet.audit.store import AuditStore
from gauntlet.config import GauntletConfig
from gauntlet.ratings import PeerState, ValidatorState


def restore_state(store: AuditStore, before_window: int | None = None) -> ValidatorState:
    """The state after the newest window recorded before `before_window` (all, when None)."""
    windows = [w for w in store.windows() if before_window is None or w < before_window]
    if not windows:
        return ValidatorState()
    last = max(windows)
    ratings = store.latest_ratings(before_window)
    peers = {int(r["uid"]): PeerState.from_row(r) for r in ratings.iter_rows(named=True)}
    row = store.read("windows", window_id=last).row(0, named=True)
    schedule = tuple((int(e), tuple(int(u) for u in uids)) for e, uids in json.loads(row["gather_schedule_json"]))
    anchor = (row["anchor_mu"], row["anchor_sigma"]) if row.get("anchor_mu") is not None else None
    return ValidatorState(last_window=last, peers=peers, gather_schedule=schedule,
                          sync_ema=row.get("sync_ema_json") or "", anchor=anchor)


def restore(cfg: GauntletConfig, window: int) -> ValidatorState:
    """Stage "restore": the state window W starts from, read from the configured audit root (or,
    for a validator that joined at W and has validated nothing before it, the joined state)."""
    store = AuditStore(cfg.audit.root)
    if not any(w < window for w in store.windows()):
        joined = [p for p in Path(cfg.validator.workdir, "joined").glob("*.json") if int(p.stem) <= window]
        if joined:
            return state_from_snapshot(json.loads(max(joined).read_text()))
    return restore_state(store, before_window=window)


def peer_row(peer: PeerState) -> dict:
    """A peer's state as plain JSON values (what `PeerState.from_row` reads back)."""
    out = {k: v for k, v in asdict(peer).items() if k != "tracker"}
    return {**out, **peer.tracker.to_row()}


def state_snapshot(state: ValidatorState) -> dict:
    """The state as JSON: what a validator publishes for others to join from."""
    return {"last_window": state.last_window, "peers": [peer_row(p) for _, p in sorted(state.peers.items())],
            "gather_schedule": [[e, list(u)] for e, u in state.gather_schedule], "sync_ema": state.sync_ema,
            "anchor": list(state.anchor) if state.anchor else None}


def state_from_snapshot(data: dict) -> ValidatorState:
    """The inverse of `state_snapshot`; a malformed snapshot is refused with what is wrong."""
    try:
        peers = {int(r["uid"]): PeerState.from_row(r) for r in data["peers"]}
        schedule = tuple((int(e), tuple(int(u) for u in uids)) for e, uids in data["gather_schedule"])
        last = data["last_window"]
        anchor = data.get("anchor")
        if anchor is not None:
            mu, sigma = (float(v) for v in anchor)
            if not (math.isfinite(mu) and math.isfinite(sigma) and sigma > 0):
                raise ValueError(f"anchor must be a finite mu and a positive sigma, got {anchor!r}")
            anchor = (mu, sigma)
        return ValidatorState(last_window=None if last is None else int(last), peers=peers,
                              gather_schedule=schedule, sync_ema=str(data.get("sync_ema", "")), anchor=anchor)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a validator state snapshot: {exc!r}") from exc


def joined_path(workdir: str | Path, window: int) -> Path:
    """Where `gauntlet join` leaves the state a joining validator starts window W from."""
    return Path(workdir) / "joined" / f"{window:08d}.json"
