"""A local network under the `templar-2026` rules: every window completes with hostile peers in,
the 2026 sync rule's EMA is tracked alike by the validator and the miners, and the state rebuilt
from the audit tables (trackers, sync EMA) equals the one carried in memory."""

from __future__ import annotations

import pytest

from gauntlet.audit.store import AuditStore
from gauntlet.localnet.network import init_network
from gauntlet.localnet.simulate import run_network
from gauntlet.state import restore_state
from gauntlet.window.pipeline import Direct, validate_window

pytestmark = pytest.mark.slow
ROSTER = ["honest"] * 4 + ["late", "copycat", "malformed", "stale"]


def test_templar_2026_network_runs_and_restores(tmp_path, prepared_data):
    corpus, tokenizer = prepared_data
    net = init_network(tmp_path / "net", behaviours=ROSTER, corpus=corpus, tokenizer=tokenizer, force=True,
                       overrides={"preset": "templar-2026", "filter": {"put_window_s": 1.0},
                                  "rules": {"burn_share": 0.0}})
    cfg = net.config
    assert cfg.rules.sync_iqm and cfg.rules.weight_scheme == "ramp"
    store = AuditStore(cfg.audit.root)
    state = [restore_state(store)]

    def validate(window: int) -> None:
        state[0] = validate_window(Direct(), cfg, window, state=state[0]).state

    reports = run_network(net, 5, validate)
    last = max(store.windows())
    assert store.windows() == list(range(last + 1)) and last >= 2
    assert restore_state(store) == state[0]  # trackers and the sync EMA come back from the tables
    assert state[0].sync_ema  # the 2026 sync rule ran, with its EMA kept in the tables
    for window in store.windows():  # the miners' public checks (the IQM sync among them) agree with the validator's
        recorded = {r["uid"]: r["reason"] for r in store.read("verdicts", window_id=window).iter_rows(named=True)}
        assert reports[window].verdicts == recorded, window
    verdicts = {r["uid"]: r["reason"] for r in store.read("verdicts", window_id=last).iter_rows(named=True)}
    assert all(verdicts[u] == "ok" for u in net.uids("honest"))
    assert verdicts[net.uids("late")[0]] == "too_late"
    ratings = store.read("ratings", window_id=last)
    late = ratings.filter(ratings["uid"] == net.uids("late")[0]).row(0, named=True)
    assert late["consecutive_misses"] == last + 1 and any("missing" in r or "x0" in r for r in late["rules_fired"])
