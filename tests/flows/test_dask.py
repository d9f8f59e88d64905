"""Scale-out: scoring fanned out over a local Dask cluster of 2 worker processes gives exactly the
scores, ratings, weights and checkpoints of the default thread-pool runner for the same window."""

from __future__ import annotations

import math
import os

import pytest
from distributed import Client, LocalCluster, get_task_stream
from prefect.settings import PREFECT_API_URL

from flows.validate import resolve_config, validate_window, with_task_runner
from gauntlet.audit.store import AuditStore
from gauntlet.localnet.simulate import run_network
from tests.flows.conftest import make_network

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CHUNK = 2
"""Peers per scoring task: small, so the window's peers make several tasks for the two workers."""
COMPARED = ("verdicts", "scores", "ratings", "weights")


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes. Prefect's engine runs each task on its worker and
    reports to the API: the harness's API (set in this process only) is passed in the workers'
    environment, else each would start a temporary server of its own."""
    api_url = PREFECT_API_URL.value()
    assert api_url, "the prefect_test_harness fixture should have set PREFECT_API_URL"
    env = {"PREFECT_API_URL": api_url, "OMP_NUM_THREADS": "1"}
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                      env=env) as local, Client(local) as client:
        yield local, client


@pytest.fixture(scope="module")
def network(tmp_path_factory, prepared_data):
    net = make_network(tmp_path_factory.mktemp("net"), prepared_data, overrides=[f"scoring.chunk_peers={CHUNK}"])
    run_network(net, 3, None)
    return net


def test_dask_scores_exactly_as_the_thread_pool(network, cluster):
    local, client = cluster
    folder = str(network.folder)
    store = AuditStore(network.config.audit.root)
    threads = validate_window(window=0, network=folder)  # default runner: Prefect's thread pool
    assert not threads["skipped"]
    recorded = {table: store.read(table, window_id=0) for table in COMPARED}
    checkpoints = store.read("windows", window_id=0).select("checkpoint_before", "checkpoint_after")
    scored = recorded["scores"].filter(recorded["scores"]["loss_rand_after"].is_not_null()).height
    assert scored > CHUNK, "too few peers scored for the window to fan out"

    cfg = resolve_config(None, folder, overrides=[f"scaleout.dask_address={local.scheduler_address}"])
    on_dask = with_task_runner(cfg)
    assert on_dask is not validate_window
    with get_task_stream(client) as stream:
        dask = on_dask(window=0, network=folder, rerun=True)
    assert not dask["skipped"]

    for table, frame in recorded.items():
        assert store.read(table, window_id=0).equals(frame), table
    assert store.read("windows", window_id=0).select("checkpoint_before", "checkpoint_after").equals(checkpoints)
    assert dask["weights"] == threads["weights"] and dask["gather"] == threads["gather"]

    # The chunks ran on the two worker processes, not in this one.
    chunks = list(stream.data)  # only the evaluate chunks are submitted; every other stage is a direct call
    assert len(chunks) == math.ceil(scored / CHUNK), [task["key"] for task in stream.data]
    assert all(task["status"] == "OK" for task in chunks)
    pids = client.run(os.getpid)  # worker address -> pid
    used = {pids[task["worker"]] for task in chunks}
    assert len(used) == 2 and os.getpid() not in used, (used, pids)


def test_chunked_scores_replay_identically_on_the_direct_path(network, cluster):
    """The chunks share one L_rand_before; the direct path (one chunk) computes its own: same values."""
    from gauntlet.replay import replay_window

    store = AuditStore(network.config.audit.root)
    assert store.has_window(0)  # validated in chunks by the test above
    report, _ = replay_window(store, 0)
    assert report.identical, report.differences
