"""The chain-following flow catches up on missed windows and never validates one twice."""

from __future__ import annotations

import pytest

from flows.follow import follow_chain, next_window
from gauntlet.audit.store import AuditStore
from gauntlet.localnet.simulate import run_network
from tests.flows.conftest import make_network

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_next_window_resumes_after_the_newest_validated(tmp_path):
    store = AuditStore(tmp_path)
    assert next_window(store, ready=7, start_window=0, catch_up=0) == 7
    assert next_window(store, ready=7, start_window=0, catch_up=100) == 0


def test_follow_catches_up_then_stops_and_never_repeats(tmp_path, prepared_data):
    net = make_network(tmp_path / "net", prepared_data, ["honest"] * 3 + ["noise"])
    run_network(net, 3, None)  # the validator was down: windows 0 and 1 are ready, unvalidated
    done = follow_chain(network=str(net.folder), catch_up=100, idle_timeout_s=0.0, poll_s=0.1)
    assert done == [0, 1]
    assert follow_chain(network=str(net.folder), idle_timeout_s=0.0, poll_s=0.1) == []
    run_network(net, 1, None)  # one more window closes
    assert follow_chain(network=str(net.folder), idle_timeout_s=0.0, poll_s=0.1) == [2]
    assert AuditStore(net.config.audit.root).windows() == [0, 1, 2]


def test_a_window_not_closed_yet_fails_without_retries(tmp_path, prepared_data):
    from prefect.states import Failed

    from flows.validate import validate_window
    from gauntlet.clock import NotReady
    from tasks.window import _retry_unless_not_ready

    net = make_network(tmp_path / "net", prepared_data, ["honest"] * 2)
    state = validate_window(window=5, network=str(net.folder), return_state=True)
    assert state.is_failed()
    assert "can be validated from block" in str(state.result(raise_on_failure=False))
    assert not _retry_unless_not_ready(None, None, Failed(data=NotReady("not yet")))
    assert _retry_unless_not_ready(None, None, Failed(data=ConnectionError("node down")))
