"""Task bodies (`.fn()`): reruns keep the chain's recorded answer; state comes from the tables."""

from __future__ import annotations

from gauntlet.audit.store import AuditStore
from gauntlet.chain import WeightsResult
from gauntlet.config import load_config
from tasks.window import TASKS
from tests.gauntlet.audit import synthetic_window


def _config(tmp_path):
    return load_config(overrides={"audit": {"root": str(tmp_path)}, "chain": {"ledger": str(tmp_path / "no-chain.sqlite")}})


def test_rerun_publishes_nothing(tmp_path):
    published = TASKS["publish"].fn(_config(tmp_path), 4, None, None, None, True)
    assert not published.published and not (tmp_path / "no-chain.sqlite").exists()


def test_rerun_returns_the_recorded_chain_answer_without_touching_the_chain(tmp_path):
    store = AuditStore(tmp_path)
    store.write_window(4, synthetic_window(4))
    recorded = store.read("weights", window_id=4).filter("set_on_chain").row(0, named=True)
    # a rerun must not open the chain at all: the ledger path above does not exist
    result = TASKS["weights"].fn(_config(tmp_path), 4, None, False, True)
    assert result == WeightsResult(recorded["chain_success"], recorded["chain_message"], recorded["set_at_block"])
    assert not (tmp_path / "no-chain.sqlite").exists()


def test_restore_reads_the_snapshot_before_the_window(tmp_path):
    store = AuditStore(tmp_path)
    for w in (1, 2, 3):
        store.write_window(w, synthetic_window(w))
    state = TASKS["restore"].fn(_config(tmp_path), 3)
    assert state.last_window == 2
    ratings = store.read("ratings", window_id=2)
    assert set(state.peers) == set(ratings["uid"].to_list())
    assert TASKS["restore"].fn(_config(tmp_path), 1).peers == {}
