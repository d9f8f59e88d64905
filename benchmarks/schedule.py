"""`make bench`'s scheduler: every benchmark in its own process, `jobs` at a time, longest first.

`make bench` must fit in 30 minutes on a 2-core machine, so the benchmarks run one process per
core (one torch thread each) rather than one after another, longest first (`COST_S`), so that
the short ones fill the cores the long ones leave idle. A benchmark that splits into independent
runs (`parts(quick, scratch)` -> argument tuples of `run_one`, and `combine(results, quick,
seconds)`; the incentive benchmark's presets) has each run scheduled as its own job. Every job
gets a fresh process, so no benchmark sees another's state, and each still measures its ratios
within its own process. Benchmarks are read from their source, never imported here: importing
one may set things up for its own run (bench_flow sets PREFECT_HOME and imports Prefect).
"""

from __future__ import annotations

import ast
import importlib
import os
import tempfile
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


COST_S = {"screening": 380, "incentive": 360, "window": 280, "flow": 170, "sparseloco": 140, "scoring": 90,
          "audit": 35, "codec": 12, "attacks": 90}
"""CPU seconds of each benchmark (of each part, for one with `parts`) with one torch thread, as
`make bench` measured them on the 2-core machine (2026-11-30): only the order matters, longest
first, so that the short ones fill in at the end. A benchmark not listed counts as DEFAULT_COST_S."""
DEFAULT_COST_S = 120


@dataclass
class Job:
    name: str
    args: tuple = ()
    """`run_one`'s arguments for one part of a split benchmark; () runs the module's main()."""
    cost: float = DEFAULT_COST_S
    part: int = 0


@dataclass
class Bench:
    """One benchmark of the run: its output file, its jobs and, as they finish, their results."""

    name: str
    results: Path
    split: bool
    jobs: int = 0
    done: dict[int, object] = field(default_factory=dict)
    """Results by part, as they finish (combined in the parts' order)."""
    spans: list[tuple[float, float]] = field(default_factory=list)
    cpu_s: float = 0.0


def _worker(name: str, results: str, args: tuple) -> tuple[float, float, float, object]:
    """In a fresh process: one benchmark's main(), or one part (`run_one(*args)`) of a split one;
    (start, end, CPU seconds of this process, result). CPU seconds do not grow with the machine's
    other load, so they say what the run costs where wall seconds say what it took."""
    torch.set_num_threads(1)
    started, cpu = time.time(), time.process_time()
    module = importlib.import_module(f"benchmarks.bench_{name}")
    module.RESULTS = Path(results)
    value = module.run_one(*args) if args else module.main()
    return started, time.time(), time.process_time() - cpu, value


def _modules(names: list[str], quick: bool, named: bool) -> dict[str, bool]:
    """name -> whether the benchmark splits into parts; each checked for its RESULTS. Read from
    the source, not imported: importing a benchmark may set things up for its own run (bench_flow
    sets PREFECT_HOME and imports Prefect), which this process and its children must not inherit."""
    split = {}
    for name in names:
        tree = ast.parse((HERE / f"bench_{name}.py").read_text())
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assigned = {t.id for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                    for target in (n.targets if isinstance(n, ast.Assign) else [n.target])
                    for t in (target.elts if isinstance(target, ast.Tuple) else [target]) if isinstance(t, ast.Name)}
        if "RESULTS" not in assigned or "main" not in defined:
            raise SystemExit(f"benchmarks.run: bench_{name}.py must define main() and name its output file in RESULTS")
        split[name] = {"parts", "run_one", "combine"} <= defined
    if quick and named and not all(split.values()):
        raise SystemExit(f"benchmarks.run: no quick mode in {', '.join(n for n, s in split.items() if not s)}")
    return {n: s for n, s in split.items() if s or not quick}


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def run_benchmarks(names: list[str], out: Path, quick: bool, jobs: int, named: bool = False) -> tuple[dict, dict, dict]:
    """Every benchmark in `names`, `jobs` processes at a time, longest first: (figures by name,
    timing by name with "" for the whole run, errors by name)."""
    split = _modules(names, quick, named)
    benches = {n: Bench(n, out / f"{n}.json", s) for n, s in split.items()}
    results, errors, timing = {}, {}, {"": {"jobs": jobs, "load_before": _load()}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-run-") as scratch:
        queue = _jobs(benches, quick, Path(scratch))
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
            futures = {pool.submit(_worker, job.name, str(benches[job.name].results), job.args): job for job in queue}
            for future in as_completed(futures):
                job = futures[future]
                bench = benches[job.name]
                if job.name in errors or not _take(bench, job, future, errors) or len(bench.done) < bench.jobs:
                    continue
                figures = _finish(bench, quick, errors)
                if figures is not None:
                    results[job.name] = figures
                    timing[job.name] = {"seconds": max(e for _, e in bench.spans) - min(s for s, _ in bench.spans),
                                        "cpu_s": bench.cpu_s, "load_after": _load()}
                    print(f"== {job.name} done in {timing[job.name]['seconds']:.0f} s "
                          f"({bench.cpu_s:.0f} CPU s)", flush=True)
    timing[""] |= {"seconds": time.perf_counter() - started, "load_after": _load()}
    return {n: results[n] for n in split if n in results}, timing, errors


def _jobs(benches: dict[str, Bench], quick: bool, scratch: Path) -> list[Job]:
    queue = []
    for bench in benches.values():
        cost = COST_S.get(bench.name, DEFAULT_COST_S)
        if bench.split:
            module = importlib.import_module(f"benchmarks.bench_{bench.name}")
            parts = module.parts(quick, scratch / bench.name)
            queue += [Job(bench.name, tuple(args), cost, i) for i, args in enumerate(parts)]
            bench.jobs = len(parts)
        else:
            queue.append(Job(bench.name, (), cost))
            bench.jobs = 1
    return sorted(queue, key=lambda job: -job.cost)  # stable: a benchmark's parts keep their order


def _take(bench: Bench, job: Job, future: Future, errors: dict[str, str]) -> bool:
    """One finished job's result into its benchmark; False (and the error noted) when it failed."""
    try:
        start, end, cpu, value = future.result()
    except Exception as exc:  # a benchmark's failure must not stop the others
        errors[bench.name] = f"{type(exc).__name__}: {exc}"
        print(f"== {bench.name} FAILED: {errors[bench.name]}", flush=True)
        return False
    bench.done[job.part] = value
    bench.spans.append((start, end))
    bench.cpu_s += cpu
    return True


def _finish(bench: Bench, quick: bool, errors: dict[str, str]) -> dict | None:
    """A benchmark's figures once all its jobs are in: the one result, or its parts combined."""
    if not bench.split:
        return bench.done[0]
    module = importlib.import_module(f"benchmarks.bench_{bench.name}")
    module.RESULTS = bench.results
    seconds = max(e for _, e in bench.spans) - min(s for s, _ in bench.spans)
    try:
        return module.combine([bench.done[i] for i in range(bench.jobs)], quick, seconds)
    except Exception as exc:  # as for a failed job: the other benchmarks go on
        errors[bench.name] = f"combining its parts: {type(exc).__name__}: {exc}"
        print(f"== {bench.name} FAILED: {errors[bench.name]}", flush=True)
        return None
