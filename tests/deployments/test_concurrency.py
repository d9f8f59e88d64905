"""One window at a time, on a real Prefect server with the deployments served as in production.

Three triggers at once over a local network whose window 0 is closed and not validated: the
long-running `follow-chain/validator`, and two `follow-chain/scheduled` runs. The second
scheduled one is cancelled by its deployment's CANCEL_NEW limit; the other two run together and
the global window lock lets only one of them validate the window. Then an idle follow run
proves cheap: it imports no torch.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gauntlet.audit.store import AuditStore
from gauntlet.localnet.simulate import run_network
from tests.flows.conftest import make_network
from tests.flows.prefect_server import ROOT, PrefectServer, process, tail, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SERVE = """
import sys
from prefect import serve
from deployments.limits import ensure_limits
from deployments.serve import deployments
ensure_limits()
chosen = [d for d in deployments(network=sys.argv[1]) if d.name in ("validator", "scheduled")]
for d in chosen:
    d.schedules = []  # the test is the trigger; a schedule would add runs of its own
serve(*chosen)
"""
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
IDLE = """
import sys, time
start = time.perf_counter()
from flows.follow import follow_chain
done = follow_chain(network=sys.argv[1], idle_timeout_s=0.0, poll_s=0.1)
print("done", done, "torch", "torch" in sys.modules, "seconds", round(time.perf_counter() - start, 2))
"""


@pytest.fixture(scope="module")
def network(tmp_path_factory, prepared_data):
    """Miners for 2 windows and no validator: window 0 is closed and not validated."""
    net = make_network(tmp_path_factory.mktemp("net"), prepared_data, ["honest"] * 3,
                       ["retention.keep_checkpoints=1", "retention.keep_archive_windows=1"])
    run_network(net, 2, None)
    return net


def _deployment(api, name: str) -> dict:
    response = api.get(f"/deployments/name/{name}")
    return response.status_code == 200 and response.json()


def _trigger(api, deployment_id: str, parameters: dict) -> str:
    response = api.post(f"/deployments/{deployment_id}/create_flow_run", json={"parameters": parameters})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _window_runs(api) -> list[dict]:
    runs = api.post("/flow_runs/filter", json={"flow_runs": {"name": {"any_": ["window-0"]}}}).json()
    return [r for r in runs if r["state_type"] != "SCHEDULED"]


def _validated_events(api) -> list[dict]:
    """`gauntlet.window.validated` events of window 0, emitted by the flow (`tasks.events`)."""
    response = api.post("/events/filter", json={"filter": {
        "event": {"name": ["gauntlet.window.validated"]}, "resource": {"labels": {"gauntlet.window": ["0"]}}}})
    return response.json()["events"] if response.status_code == 200 else []


def test_two_triggers_validate_a_window_once(live_server: PrefectServer, network, tmp_path):
    log = tmp_path / "runner.log"
    env = live_server.client_env(PREFECT_RUNNER_POLL_FREQUENCY="1")
    folder = str(network.folder)
    with process([sys.executable, "-c", SERVE, folder], env, log) as runner, live_server.api() as api:
        validator = wait_until(lambda: _deployment(api, "follow-chain/validator"), 120.0, "serving", runner, log)
        scheduled = wait_until(lambda: _deployment(api, "follow-chain/scheduled"), 30.0, "serving", runner, log)
        assert validator["concurrency_options"]["collision_strategy"] == "ENQUEUE"
        assert scheduled["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
        assert validator["global_concurrency_limit"]["limit"] == scheduled["global_concurrency_limit"]["limit"] == 1
        params = {"network": folder, "idle_timeout_s": 0.0, "poll_s": 0.2}
        runs = [_trigger(api, validator["id"], params), _trigger(api, scheduled["id"], params),
                _trigger(api, scheduled["id"], params)]

        def finished():
            states = [api.get(f"/flow_runs/{r}").json()["state"]["type"] for r in runs]
            return all(s in TERMINAL for s in states) and states

        states = wait_until(finished, 240.0, "three follow runs", runner, log, every_s=1.0)
        assert states[0] == "COMPLETED", f"{states}\n{tail(log)}"
        assert sorted(states[1:]) == ["CANCELLED", "COMPLETED"], f"{states}\n{tail(log)}"
        validated = _window_runs(api)
        assert [r["state_type"] for r in validated] == ["COMPLETED"], validated  # one run validated it
        wait_until(lambda: len(_validated_events(api)) == 1, 60.0, "the window's event", runner, log)
        artifacts = api.post("/artifacts/latest/filter", json={"artifacts": {"key": {"any_": ["validator-status"]}}})
        assert "last validated window: 0; 0 window(s) behind" in artifacts.json()[0]["data"], artifacts.text
    assert AuditStore(network.config.audit.root).windows() == [0]
    workdir = Path(network.config.validator.workdir)  # retention: theta_1 is all the next window needs
    assert sorted(p.name for p in (workdir / "checkpoints").glob("*.safetensors")) == ["00000001.safetensors"]
    assert [p.name for p in (workdir / "archive").iterdir()] == ["00000000"]
    assert len(network.chain.weights_history(hotkey=network.config.validator.hotkey)) == 1


def test_an_idle_follow_run_imports_no_torch(live_server: PrefectServer, network):
    """After the window above, nothing is new: the run ends quickly without the model's imports."""
    env = live_server.client_env()
    result = subprocess.run([sys.executable, "-c", IDLE, str(network.folder)], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("done [] torch False"), line
    print(line)  # the measured wall time, for the record
