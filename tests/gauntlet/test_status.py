"""`gauntlet status` over a real local ledger and real audit tables."""

from __future__ import annotations

import json

import pytest

from gauntlet.audit.store import AuditStore
from gauntlet.chain import open_chain
from gauntlet.config import load_config
from gauntlet.status import collect, run_status
from tests.gauntlet.audit import HONEST_2, LATE, synthetic_window


@pytest.fixture
def setup(tmp_path):
    cfg = load_config(overrides=[f"chain.ledger={tmp_path / 'chain.sqlite'}", f"audit.root={tmp_path / 'audit'}",
                                 "chain.blocks_per_window=8", "validator.max_lag_windows=1"])
    store = AuditStore(cfg.audit.root)
    for window in (0, 1):
        store.write_window(window, synthetic_window(window))
    three = synthetic_window(3)
    for row in three["verdicts"]:
        if row["uid"] == HONEST_2:
            row.update(reason="infrastructure", blame="infrastructure", detail="bucket answered 503")
    for row in three["weights"]:
        row.update(set_on_chain=True, set_at_block=41, chain_success=False, chain_message="rate_limited: too soon")
    store.write_window(3, three)
    store.write("verdicts", 2, synthetic_window(2)["verdicts"])  # window 2 stopped mid-write
    chain = open_chain(cfg.chain)
    chain.produce_blocks(8 * 6 - chain.block())  # block 48: window 6, window 4 ready
    return cfg, chain, store


def test_status_reports_lag_weights_failures_peers_and_faults(setup):
    cfg, chain, store = setup
    status = collect(cfg, chain, store)
    assert (status.block, status.chain_window, status.ready_window, status.last_validated) == (48, 6, 4, 3)
    assert status.lag == 1 and status.healthy
    assert status.last_weights == {"window": 3, "block": 41, "success": False,
                                   "message": "rate_limited: too soon", "peers": 2}
    assert status.failed_windows == [{"window": 2, "why": "stopped while writing its audit rows"},
                                     {"window": 3, "why": "weights refused: rate_limited: too soon"}]
    assert status.peers[LATE] == {"too_late": 3}
    assert status.peers[HONEST_2] == {"infrastructure": 1, "ok": 2}
    assert status.faults == [{"window": 3, "uid": HONEST_2, "reason": "infrastructure", "detail": "bucket answered 503"}]
    text, code = run_status(cfg)
    assert code == 0 and "1 window(s) behind (max 1): OK" in text and "REFUSED" in text
    assert collect(cfg, chain, store, last_n=1).failed_windows == [status.failed_windows[1]]


def test_status_fails_the_health_check_when_behind(setup):
    cfg, chain, store = setup
    chain.produce_blocks(16)  # two more windows close; nothing validates them
    text, code = run_status(cfg)
    assert code == 1 and "3 window(s) behind (max 1): BEHIND" in text
    payload, code = run_status(cfg, as_json=True)
    data = json.loads(payload)
    assert code == 1 and data["lag"] == 3 and data["healthy"] is False and data["last_validated"] == 3


def test_a_new_validator_with_nothing_validated(tmp_path):
    cfg = load_config(overrides=[f"chain.ledger={tmp_path / 'chain.sqlite'}", f"audit.root={tmp_path / 'audit'}"])
    text, code = run_status(cfg)
    assert code == 0 and "last validated window: None" in text and "last weights: none set" in text
    with pytest.raises(ValueError, match="last_n"):
        collect(cfg, open_chain(cfg.chain), AuditStore(cfg.audit.root), last_n=0)
