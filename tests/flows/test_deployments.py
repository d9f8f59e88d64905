"""The served `validate-window/rerun` deployment on a real Prefect server, run the way the UI runs it.

A real `prefect server start`, a second process serving the deployment built by
`deployments.serve.deployments`, and the UI's Run button: `POST /api/deployments/<id>/create_flow_run`.
Nothing here goes through the in-process test harness.
"""

from __future__ import annotations

import sys

import pytest

from gauntlet.audit.store import AuditStore
from gauntlet.localnet.simulate import run_network
from gauntlet.verdicts import Reason
from tests.flows.conftest import make_network
from tests.flows.prefect_server import PrefectServer, prefect_server, process, tail, wait_until  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SERVE = ("import sys; from prefect import serve; from deployments.serve import deployments; "
         "serve(*[d for d in deployments(network=sys.argv[1]) if d.name == 'rerun'])")
"""Serve only the rerun deployment: the scheduled follow-chain one would validate windows itself."""
RUNNER_POLL_S = "2"
"""The runner asks the server for scheduled runs every 10 s by default; 2 s keeps the test short."""
RUN_TIMEOUT_S = 300.0
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.fixture(scope="module")
def network(tmp_path_factory, prepared_data):
    """Miners for 3 windows and no validator: window 0 is closed and not yet validated."""
    net = make_network(tmp_path_factory.mktemp("net"), prepared_data)
    run_network(net, 3, None)
    assert not AuditStore(net.config.audit.root).windows()
    return net


@pytest.fixture(scope="module")
def served(prefect_server: PrefectServer, network, tmp_path_factory):
    """A process serving `validate-window/rerun`; yields (deployment id, runner log)."""
    log = tmp_path_factory.mktemp("runner") / "runner.log"
    env = prefect_server.client_env(PREFECT_RUNNER_POLL_FREQUENCY=RUNNER_POLL_S)
    with process([sys.executable, "-c", SERVE, str(network.folder)], env, log) as proc, prefect_server.api() as api:
        def registered():
            response = api.get("/deployments/name/validate-window/rerun")
            return response.status_code == 200 and response.json()["id"]

        deployment_id = wait_until(registered, 120.0, "serving validate-window/rerun", proc, log)
        yield deployment_id, log, proc


def logs_of(api, flow_run_id: str) -> str:
    response = api.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": [flow_run_id]}},
                                              "sort": "TIMESTAMP_ASC", "limit": 200})
    return "\n".join(f"{row['level']} {row['message']}" for row in response.json())


def test_a_run_from_the_api_validates_the_window(prefect_server: PrefectServer, network, served):
    deployment_id, runner_log, runner = served
    with prefect_server.api() as api:
        response = api.post(f"/deployments/{deployment_id}/create_flow_run",
                            json={"parameters": {"window": 0, "network": str(network.folder)}})
        assert response.status_code == 201, response.text
        flow_run_id = response.json()["id"]

        def finished():
            state = api.get(f"/flow_runs/{flow_run_id}").json()["state"]
            return state["type"] in TERMINAL and state

        state = wait_until(finished, RUN_TIMEOUT_S, f"flow run {flow_run_id}", runner, runner_log, every_s=1.0)
        assert state["type"] == "COMPLETED", (
            f"{state}\n--- flow run logs ---\n{logs_of(api, flow_run_id)}\n"
            f"{tail(runner_log)}\n{tail(prefect_server.log)}")
        assert api.get(f"/flow_runs/{flow_run_id}").json()["name"] == "window-0"

    store = AuditStore(network.config.audit.root)
    assert store.windows() == [0]
    uids = sorted(p.uid for p in network.peers)
    verdicts = store.read("verdicts", window_id=0)
    assert sorted(verdicts["uid"].to_list()) == uids  # one verdict per peer
    reasons = dict(zip(verdicts["uid"].to_list(), verdicts["reason"].to_list()))
    assert reasons[network.uids("late")[0]] == Reason.TOO_LATE
    assert all(reasons[u] == Reason.OK for u in network.uids("honest"))
    for table in ("submissions", "ratings", "weights"):
        assert sorted(store.read(table, window_id=0)["uid"].to_list()) == uids, table
    assert store.read("windows", window_id=0).height == 1
    assert len(network.chain.weights_history(hotkey=network.config.validator.hotkey)) == 1


def test_a_bad_parameter_type_is_refused_by_the_server(prefect_server: PrefectServer, network, served):
    deployment_id = served[0]
    with prefect_server.api() as api:
        count = api.post("/flow_runs/count", json={}).json()
        response = api.post(f"/deployments/{deployment_id}/create_flow_run",
                            json={"parameters": {"window": "abc", "network": str(network.folder)}})
        assert response.status_code == 409, response.text
        assert "'abc' is not of type 'integer'" in response.text, response.text
        assert api.post("/flow_runs/count", json={}).json() == count  # nothing was created
