"""Production on a real Prefect server: a worker on a process work pool, and the bucket-read limit.

The worker test does what the README's operator walkthrough does, with the same commands: create
the work pool, create the limits and alerts (`python -m deployments.automations`), `prefect
deploy` the `rerun` deployment from `deployments/prefect.yaml`, start `prefect worker start`,
trigger one window of a local network with `prefect deployment run`, and wait for the audit rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from gauntlet.audit.store import AuditStore
from gauntlet.config import load_config
from gauntlet.localnet.simulate import run_network
from tasks.limits import BUCKET_READS, bucket_read_gate
from tests.flows.conftest import make_network
from tests.flows.prefect_server import ROOT, PrefectServer, process, tail, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.integration]

POOL = "gauntlet"
"""The work pool `deployments/prefect.yaml` names."""
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
RATE = """
import json, sys, time
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from deployments.limits import ensure_limits
from gauntlet.config import load_config
from gauntlet.window import plan
from gauntlet.window.fetch import fetch_window
from tasks.limits import BucketReadGate, bucket_read_gate
cfg = load_config(sys.argv[1], overrides=["storage.reads_per_second=2"])
limits = ensure_limits({}, cfg)
gate = bucket_read_gate(cfg)
start = time.monotonic()
with ThreadPoolExecutor(6) as pool:
    list(pool.map(gate, range(6)))
elapsed = time.monotonic() - start
seen = []
records = fetch_window(plan.run(cfg, 0), Path(sys.argv[2]), cfg, lambda uid: (gate(uid), seen.append(uid)))
start = time.monotonic()
BucketReadGate(name="gauntlet-no-such-limit")(1)
print(json.dumps({"limits": limits, "elapsed_s": elapsed, "seen": sorted(seen), "missing_s": time.monotonic() - start,
                  "read": [r.uid for r in records if r.error is None]}))
"""


@pytest.fixture(scope="module")
def network(tmp_path_factory, prepared_data):
    """Miners for 2 windows and no validator: window 0 is closed and not validated."""
    net = make_network(tmp_path_factory.mktemp("net"), prepared_data, ["honest"] * 3,
                       ["storage.reads_per_second=20"])
    run_network(net, 2, None)
    return net


def _run(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"{args}: {result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def _flow_run_state(api, deployment: str) -> str | None:
    dep = api.get(f"/deployments/name/{deployment}").json()
    runs = api.post("/flow_runs/filter", json={"flow_runs": {"deployment_id": {"any_": [dep["id"]]}}}).json()
    return runs[0]["state_type"] if len(runs) == 1 and runs[0]["state_type"] in TERMINAL else None


def test_a_worker_validates_a_window_deployed_from_prefect_yaml(live_server: PrefectServer, network, tmp_path):
    env = live_server.client_env(GAUNTLET_HOME=str(ROOT), PREFECT_WORKER_QUERY_SECONDS="1",
                                 PREFECT_WORKER_PREFETCH_SECONDS="1")
    folder, log = str(network.folder), tmp_path / "worker.log"
    _run(env, "-m", "prefect", "work-pool", "create", POOL, "--type", "process")
    limits = _run(env, "-m", "deployments.automations", "--network", folder)
    assert f"'{BUCKET_READS}': 20" in limits, limits
    _run(env, "-m", "prefect", "deploy", "--no-prompt", "--prefect-file", "deployments/prefect.yaml",
         "--name", "rerun")
    _run(env, "-m", "prefect", "deployment", "run", "validate-window/rerun", "-p", f"network={folder}",
         "-p", "window=0")
    start = time.monotonic()
    with process([sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL], env, log) as worker, \
            live_server.api() as api:
        state = wait_until(lambda: _flow_run_state(api, "validate-window/rerun"), 180.0, "the worker's run", worker, log)
    print(f"window 0 through the worker in {time.monotonic() - start:.1f} s")
    assert state == "COMPLETED", tail(log)
    assert AuditStore(network.config.audit.root).windows() == [0]
    assert len(network.chain.weights_history(hotkey=network.config.validator.hotkey)) == 1


def test_bucket_reads_keep_to_the_global_rate(live_server: PrefectServer, network, tmp_path):
    """Slots decay at `storage.reads_per_second`: 6 reads at 2/s (a burst of 2) need >= 2 s; the
    fetch stage calls the hook once per peer it reads; a missing limit costs no wait."""
    env = live_server.client_env()
    out = _run(env, "-c", RATE, str(network.folder / "config.toml"), str(tmp_path))
    result = json.loads(out.strip().splitlines()[-1])
    print(result)
    assert result["limits"] == {BUCKET_READS: 2}
    assert 2.0 - 0.2 <= result["elapsed_s"] < 30.0
    assert result["seen"] == result["read"] and len(result["seen"]) == 3
    assert result["missing_s"] < 5.0
    assert bucket_read_gate(load_config(network.folder / "config.toml")) is not None  # 20/s in this network
    unlimited = load_config(network.folder / "config.toml", overrides=["storage.reads_per_second=0"])
    assert bucket_read_gate(unlimited) is None
