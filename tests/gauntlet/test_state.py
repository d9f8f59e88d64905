"""The validator's state rebuilt from the audit tables and from a published snapshot."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from gauntlet.audit.store import AuditStore
from gauntlet.ratings import PeerState, ValidatorState
from gauntlet.state import restore_state, state_from_snapshot, state_snapshot
from tests.gauntlet.audit import synthetic_window


def _window(window: int, anchor: tuple[float, float] | None) -> dict:
    tables = synthetic_window(window)
    tables["windows"][0].update(anchor_mu=anchor[0] if anchor else None, anchor_sigma=anchor[1] if anchor else None)
    return tables


def test_the_anchor_comes_back_from_the_windows_table(tmp_path):
    store = AuditStore(tmp_path)
    store.write_window(1, _window(1, None))
    store.write_window(2, _window(2, (21.5, 7.9)))
    assert restore_state(store, before_window=2).anchor is None
    assert restore_state(store, before_window=3).anchor == (21.5, 7.9)


def test_tables_written_before_the_anchor_existed_restore_without_it(tmp_path):
    store = AuditStore(tmp_path)
    store.write_window(1, _window(1, (21.5, 7.9)))
    path = store.path("windows", 1)
    pq.write_table(pq.read_table(path).drop_columns(["anchor_mu", "anchor_sigma"]), path)  # an older file
    assert restore_state(store).anchor is None


def test_a_snapshot_round_trips_the_anchor_and_refuses_a_bad_one():
    state = ValidatorState(last_window=3, peers={1: PeerState(1, 26.0, 8.0)}, anchor=(20.0, 7.5))
    assert state_from_snapshot(state_snapshot(state)) == state
    assert state_from_snapshot(state_snapshot(ValidatorState())).anchor is None
    for bad in ([20.0], [20.0, -1.0], ["mu", 7.0], [float("nan"), 7.0], "20,7"):
        with pytest.raises(ValueError, match="snapshot"):
            state_from_snapshot(state_snapshot(state) | {"anchor": bad})
