"""The validator's running state, rebuilt from the audit tables (no other state file exists).

After a restart, a replay or on a new process of a Prefect worker, the state before window W is
the `ratings` snapshot and the gather schedule of the newest window recorded before W.
"""

from __future__ import annotations

import json

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
    return ValidatorState(last_window=last, peers=peers, gather_schedule=schedule,
                          sync_ema=row.get("sync_ema_json") or "")


def restore(cfg: GauntletConfig, window: int) -> ValidatorState:
    """Stage "restore": the state window W starts from, read from the configured audit root."""
    return restore_state(AuditStore(cfg.audit.root), before_window=window)
