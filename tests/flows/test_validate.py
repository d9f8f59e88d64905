"""The window flow over a local network of 8 peers: audit rows, weights on chain, idempotent reruns."""

from __future__ import annotations

import threading

import pytest
from prefect.client.orchestration import get_client

from deployments.limits import ensure_limits
from flows.validate import validate_window
from gauntlet.audit.store import AuditStore
from gauntlet.localnet.simulate import run_network
from gauntlet.verdicts import Reason
from tasks.limits import WINDOW_LOCK, window_lock
from tests.flows.conftest import make_network

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def validated(tmp_path_factory, prepared_data):
    """Miners for 4 windows; the flow validates each window as soon as it is ready (0 and 1)."""
    net = make_network(tmp_path_factory.mktemp("net"), prepared_data)
    done = []

    def validate(window: int) -> None:
        out = validate_window(window=window, network=str(net.folder))
        assert not out["skipped"]
        done.append(window)

    run_network(net, 4, validate)
    return net, done


def test_flow_writes_every_table_and_sets_weights(validated):
    net, done = validated
    store = AuditStore(net.config.audit.root)
    assert done and store.windows() == done
    n_peers = len(net.peers)
    for window in done:
        assert store.read("submissions", window_id=window).height == n_peers
        assert store.read("verdicts", window_id=window).height == n_peers
        assert store.read("ratings", window_id=window).height == n_peers
        assert store.read("weights", window_id=window).height == n_peers
        assert store.read("windows", window_id=window).height == 1
    reasons = {r["uid"]: r["reason"] for r in store.read("verdicts", window_id=done[-1]).iter_rows(named=True)}
    assert reasons[net.uids("late")[0]] == Reason.TOO_LATE
    assert reasons[net.uids("malformed")[0]] == Reason.MALFORMED
    assert reasons[net.uids("copycat")[0]] == Reason.COPIED
    assert all(reasons[u] == Reason.OK for u in net.uids("honest"))
    history = net.chain.weights_history(hotkey=net.config.validator.hotkey)
    assert len(history) == len(done)  # set_interval = 1 in the local network
    weights = store.read("weights", window_id=done[-1])
    assert weights.filter(weights["set_on_chain"])["chain_success"].to_list() == [True] * n_peers


def test_rerun_is_idempotent(validated):
    net, done = validated
    store = AuditStore(net.config.audit.root)
    window = done[-1]
    before = {t: store.read(t, window_id=window) for t in ("verdicts", "scores", "ratings", "weights")}
    chain_before = len(net.chain.weights_history(hotkey=net.config.validator.hotkey))

    assert validate_window(window=window, network=str(net.folder))["skipped"]
    out = validate_window(window=window, network=str(net.folder), rerun=True)
    assert not out["skipped"]
    for table, frame in before.items():
        assert store.read(table, window_id=window).equals(frame), table
    assert len(net.chain.weights_history(hotkey=net.config.validator.hotkey)) == chain_before


def test_a_run_of_its_own_waits_for_the_window_slot(validated):
    """A rerun from the UI (a top-level run) waits while a follow run holds the one window slot."""
    net, done = validated
    ensure_limits({WINDOW_LOCK: 1})
    try:
        out: dict = {}
        thread = threading.Thread(target=lambda: out.update(validate_window(window=done[-1], network=str(net.folder))))
        with window_lock():  # as `follow-chain` holds it around a window
            thread.start()
            thread.join(5.0)
            assert thread.is_alive() and not out, out  # still waiting: it did not even look at the window
        thread.join(120.0)
        assert out["skipped"], out
    finally:  # the rest of the session runs without the limit, as on a bare API
        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(WINDOW_LOCK)


def test_replay_flow_reproduces_a_flow_validated_window(validated):
    from flows.replay import replay

    net, done = validated
    out = replay(root=net.config.audit.root, window=done[0])
    assert out == {"identical": True, "windows": [done[0]]}
    what_if = replay(root=net.config.audit.root, first=done[0], last=done[-1], overrides=["weights.power=1"])
    assert what_if["windows"] == done


def test_flow_and_direct_path_write_the_same_rows(validated, tmp_path):
    """The pipeline run by plain calls, into a fresh workdir and audit root, writes exactly the
    flow's rows for the same windows, cell by cell (apart from when they were written, how long
    stages took, where the archive lives and the chain's answer: the direct run is a rerun that
    sets nothing)."""
    from gauntlet.config import with_overrides
    from gauntlet.replay import NOT_RECOMPUTED
    from gauntlet.window.pipeline import Direct, validate_window as run_window

    net, done = validated
    flow_store = AuditStore(net.config.audit.root)
    cfg = with_overrides(net.config, {"validator": {"workdir": str(tmp_path / "work")},
                                      "audit": {"root": str(tmp_path / "audit")}})
    direct_store = AuditStore(cfg.audit.root)
    for window in done:
        run_window(Direct(), cfg, window, rerun=True)
        for table in ("submissions", "verdicts", "scores", "ratings", "weights", "windows"):
            skip = {"archived_path", "config_json", *NOT_RECOMPUTED.get(table, ())}
            ours, theirs = (s.read(table, window_id=window) for s in (direct_store, flow_store))
            keep = [c for c in theirs.columns if c not in skip]
            assert ours.select(keep).equals(theirs.select(keep)), (table, window)
