"""Prefect's overhead on a window: the same window validated by the core and by the flow.

A local network of 12 peers (8 honest; copycat, late, malformed, free_rider) on the `tiny` model
mines 3 windows in `benchmarks/.work/flow-net/`; the validator checks window 0 (its checkpoint
for window 1), then window 1 is validated again and again by three arms in turn, so a shared
machine's load drift hits all alike: `direct` (`gauntlet.window.pipeline.
validate_window` after deleting the window's audit rows), `direct_thread` (the same call in a
worker thread, where the flow runs its scoring task: see `_compare`) and `flow` (the
`validate-window` flow with `rerun=True`). Both paths must write the same verdicts, scores and
ratings. Trivial flows (no task, 10 no-op tasks) separate Prefect's fixed cost per flow run from
its cost per task run; their sum for the window flow's task count is the predicted overhead.

The flow runs on Prefect's temporary API (SQLite under `benchmarks/.work/prefect-home`) with
the flow heartbeat off. Run: `.venv/bin/python -m benchmarks.bench_flow`.
"""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
# Prefect reads its settings when first imported: set them before anything imports prefect.
os.environ["PREFECT_HOME"] = str(WORK / "prefect-home")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import prefect  # noqa: E402
import torch  # noqa: E402
from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NONE  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId  # noqa: E402
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings  # noqa: E402

from flows.validate import validate_window as validate_flow  # noqa: E402
from gauntlet.audit.store import AuditStore  # noqa: E402
from gauntlet.localnet.network import Network, init_network  # noqa: E402
from gauntlet.localnet.simulate import run_network  # noqa: E402
from gauntlet.window.pipeline import Direct, validate_window  # noqa: E402

RESULTS = HERE / "results" / "flow.json"
ROSTER = ["honest"] * 8 + ["copycat", "late", "malformed", "free_rider"]
MINED = 3
"""Windows mined: with validator_offset 2, windows 0 and 1 are then ready."""
WINDOW = 1
TRIVIAL_TASKS = 10
COMPARED = ("verdicts", "scores", "ratings")
"""Tables both paths must write identically (weights differ: the direct path asks the chain again)."""


@task(task_run_name="noop-{i}", cache_policy=NONE)
def _noop(i: int) -> int:
    return i


@flow(name="bench-empty")
def _empty_flow() -> int:
    return 0


@flow(name="bench-tasks")
def _tasks_flow(n: int) -> int:
    return sum(_noop(i) for i in range(n))


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _stages(store: AuditStore, window: int) -> dict[str, float]:
    return json.loads(store.read("windows", window_id=window).row(0, named=True)["timings_json"])


def _tables(store: AuditStore, window: int) -> dict[str, object]:
    return {t: store.read(t, window_id=window) for t in COMPARED}


def _direct(net: Network, store: AuditStore, window: int) -> float:
    """The pipeline by direct calls, the state restored from the tables as the flow does."""
    store.delete_window(window)

    def run() -> None:
        validate_window(Direct(), net.config, window)

    return _timed(run)[0]


def _flowed(net: Network, window: int) -> tuple[float, str]:
    seconds, state = _timed(lambda: validate_flow(window=window, network=str(net.folder), rerun=True,
                                                  return_state=True))
    if state.result()["skipped"]:
        raise RuntimeError(f"the flow skipped window {window} despite rerun=True")
    return seconds, str(state.state_details.flow_run_id)


def _task_runs(flow_run_id: str) -> int:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return len(runs)


def _median_stages(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def _trivial(repeats: int, pause_s: float = 1.0) -> dict[str, float]:
    """Empty flow vs a flow of no-op tasks, alternated and paced: fixed cost per run, cost per task.

    Paced because the temporary server records about 3 events per task run in SQLite: a flow
    started right after one with tasks often waits out a "database is locked" back-off of about
    2 s. The back-to-back block counts how often that happens.
    """
    _empty_flow(), _tasks_flow(TRIVIAL_TASKS)  # warm-up: the flows registered with the API
    empty, tasks = [], []
    for _ in range(repeats):
        time.sleep(pause_s)
        empty.append(_timed(_empty_flow)[0])
        time.sleep(pause_s)
        tasks.append(_timed(lambda: _tasks_flow(TRIVIAL_TASKS))[0])
    burst = [_timed(lambda: _tasks_flow(TRIVIAL_TASKS))[0] for _ in range(repeats)]
    time.sleep(3 * pause_s)  # let the server record the burst's events before the process ends
    fixed, with_tasks = statistics.median(empty), statistics.median(tasks)
    return {"repeats": repeats, "pause_s": pause_s, "empty_flow_ms": fixed * 1e3,
            f"flow_with_{TRIVIAL_TASKS}_tasks_ms": with_tasks * 1e3,
            "per_task_ms": (with_tasks - fixed) / TRIVIAL_TASKS * 1e3,
            "back_to_back_runs_ms": [round(b * 1e3, 1) for b in burst],
            "back_to_back_stalls_over_1s": sum(b > 1.0 for b in burst)}


def _setup() -> tuple[Network, dict[str, float]]:
    seconds: dict[str, float] = {}
    seconds["init"], net = _timed(lambda: init_network(
        WORK / "flow-net", behaviours=ROSTER, corpus=WORK / "data" / "corpus", tokenizer=WORK / "data" / "tokenizer",
        force=True, overrides=["filter.put_window_s=1.0"]))
    seconds["mine"], _ = _timed(lambda: run_network(net, MINED))
    return net, seconds


def _compare(net: Network, store: AuditStore, repeats: int) -> dict:
    """Three arms in turn on one window; the first run of each (context, API server) is reported apart.

    `direct_thread` runs the same direct call in a worker thread, as the flow runs its evaluate
    stage (submitted to the flow run's thread-pool task runner). Until `build_model` kept freed
    memory (`gauntlet.model.keep_freed_memory`), glibc returned the big transient tensors to the
    kernel and scoring page-faulted them in again batch after batch, at a cost that differed
    between the main thread, this arm's long-lived thread and the fresh task-runner thread of
    each flow run: the last added about 0.6 s to the flow's evaluate stage on a 5-10 s window,
    most of the 19% once measured here. The arms now agree within noise, and the flow over
    `direct_thread` isolates Prefect (its flow run, task runs, artifacts and events).
    """
    pool = ThreadPoolExecutor(1)
    arms: dict[str, Callable[[], float]] = {
        "direct": lambda: _direct(net, store, WINDOW),
        "direct_thread": lambda: pool.submit(_direct, net, store, WINDOW).result(),
        "flow": lambda: _flowed(net, WINDOW)[0],
    }
    first = {"direct": arms["direct"]()}
    reference = _tables(store, WINDOW)
    first["direct_thread"] = arms["direct_thread"]()
    first["flow"], run_id = _flowed(net, WINDOW)
    for name, frame in _tables(store, WINDOW).items():
        if not frame.equals(reference[name]):
            raise RuntimeError(f"the flow and the direct path wrote different {name} rows for window {WINDOW}")
    runs: dict[str, list[float]] = {a: [] for a in arms}
    stages: dict[str, list[dict[str, float]]] = {a: [] for a in arms}
    for _ in range(repeats):
        for arm, fn in arms.items():
            runs[arm].append(fn())
            stages[arm].append(_stages(store, WINDOW))
    pool.shutdown()
    med = {a: statistics.median(r) for a, r in runs.items()}
    scored = store.read("scores", window_id=WINDOW)["gradient_score"].drop_nulls().len()
    return {
        "window": WINDOW, "repeats": repeats, "evaluated_peers": scored, "flow_task_runs": _task_runs(run_id),
        "first_run_s": first, "median_s": med,
        "flow_over_direct": med["flow"] / med["direct"],
        "flow_over_direct_thread": med["flow"] / med["direct_thread"],
        "flow_minus_direct_thread_s": statistics.median(b - a for a, b in zip(runs["direct_thread"], runs["flow"])),
        "outside_score_s": {a: statistics.median(r - s["evaluate"] for r, s in zip(runs[a], stages[a])) for a in arms},
        "runs_s": runs, "stages_median_s": {a: _median_stages(s) for a, s in stages.items()},
    }


def main(repeats: int = 4, trivial_repeats: int = 10) -> dict:
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    net, setup = _setup()
    cfg = net.config
    store = AuditStore(cfg.audit.root)
    setup["validate_window_0"], _ = _timed(lambda: validate_window(Direct(), cfg, 0))
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        window = _compare(net, store, repeats)
        trivial = _trivial(trivial_repeats)
    predicted = (trivial["empty_flow_ms"] + window["flow_task_runs"] * trivial["per_task_ms"]) / 1e3
    result = {
        "torch": torch.__version__, "prefect": prefect.__version__, "threads": torch.get_num_threads(),
        "prefect_api": str(get_current_settings().api.url or "temporary server"),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "peers": len(ROSTER), "roster": {b: ROSTER.count(b) for b in dict.fromkeys(ROSTER)},
        "model": cfg.model.size, "setup_s": setup,
        **window, "trivial": trivial, "predicted_overhead_s": predicted,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
