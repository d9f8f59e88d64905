"""`make bench`: run every benchmark in one process, one torch thread, and write the results.

Each `benchmarks/bench_<name>.py` measures ratios within one run (so a noisy machine's drift
cancels), names its output file in its module-level `RESULTS` and writes `<name>.json` there.
This runner points `RESULTS` at its output folder and, when every benchmark ran, writes
RESULTS.md beside them and the headline figures, flat, to `results.json` (`benchmarks/results.json`
for the tracked run); `--collect` rebuilds both from the JSON files already there.

The output folder is `benchmarks/.work/results/` (git-ignored) unless `--write-results` is given:
a run on someone's laptop must not dirty the tracked `benchmarks/results/`, which holds the
figures the README quotes and changes only when someone means to update them.

`make bench` must fit in 30 minutes on a 2-core machine, so the benchmarks run `--jobs` processes
at a time (default: one per core, one torch thread each), longest first (`COST_S`): a benchmark
that splits into independent runs (`parts(quick, scratch)` and `combine(results, quick, seconds)`,
the incentive benchmark's presets) has each run scheduled as its own job, and the shorter
benchmarks fill the cores the longer ones leave idle. Each benchmark still measures its ratios
within its own process. `--quick` (CI smoke) runs only the benchmarks that have a quick mode
(those with `parts`), in that mode. RESULTS.md opens with the goals table (`benchmarks.goals`).

    python -m benchmarks.run [--write-results | --out DIR] [--quick] [--jobs N] [NAME ...]
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import torch

from benchmarks.goals import goals_section

HERE = Path(__file__).resolve().parent
TRACKED = HERE / "results"
SCRATCH = HERE / ".work" / "results"


def _names(wanted: list[str]) -> list[str]:
    found = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    unknown = sorted(set(wanted) - set(found))
    if unknown:
        raise SystemExit(f"benchmarks.run: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(found)}")
    return [n for n in found if not wanted or n in wanted]


def _markdown(results: dict[str, dict], figures: dict[str, object], timing: dict[str, dict] | None = None,
              quick: bool = False) -> str:
    lines = ["# Benchmark results", "",
             f"Written by `make bench{' --quick' if quick else ''}` on {time.strftime('%Y-%m-%d')}; "
             f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, "
             f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}.",
             "Ratios were measured within one run; absolute times are for this machine only.", ""]
    lines += goals_section(figures, quick=quick) + _headline(figures) + _timing(timing)
    for name, figures_of in results.items():
        lines += [f"## {name}", "", "```json", json.dumps(figures_of, indent=2, default=str), "```", ""]
    return "\n".join(lines)


def _timing(timing: dict[str, dict] | None) -> list[str]:
    """One line per benchmark: wall seconds and the load average around it (other work on the
    machine slows every absolute time; the ratios are measured within each benchmark's run)."""
    if not timing:
        return []
    run = timing.get("", {})
    lines = [f"Run: {run.get('seconds', 0):.0f} s wall in all, {run.get('jobs')} job(s) at a time on "
             f"{os.cpu_count()} CPU(s), load average {run.get('load_before')} before and {run.get('load_after')} "
             "after; per benchmark (wall seconds, CPU seconds of its processes, load average at its end):", ""]
    lines += [f"- `{name}`: {t['seconds']:.0f} s, {t.get('cpu_s', 0):.0f} CPU s, load {t['load_after']}"
              for name, t in timing.items() if name]
    return lines + [""]


CONTEXT_KEYS = frozenset({"window", "windows", "uid", "seconds", "runs", "repeats", "peers", "threads", "cpus",
                          "cpu_count", "tensors", "parameters", "evaluated_peers"})
"""Top-level numbers that describe a benchmark's set-up, not a result (kept in its own JSON)."""


ALIASES = {"prefect_overhead": "flow_over_direct_thread", "codec_share": "codec_share"}
"""Issue keys named after the figure that measures them: Prefect's overhead is the flow over the
same direct call in a worker thread (where the flow runs its tasks), the stricter of the two
comparisons `bench_flow` makes. `codec_share` is null until a benchmark measures it."""


def flat(results: dict[str, dict]) -> dict[str, object]:
    """The headline figures: every top-level result (number, flag or null) of every benchmark, one
    flat mapping (`benchmarks/results.json`); a key two benchmarks share keeps the later one's."""
    out: dict[str, object] = {}
    for figures in results.values():
        out.update({k: v for k, v in figures.items()
                    if k not in CONTEXT_KEYS and (v is None or isinstance(v, (bool, int, float)))})
    return {**out, **{key: out.get(source) for key, source in ALIASES.items()}}


def _headline(figures: dict[str, object]) -> list[str]:
    lines = ["## Headline figures (`results.json`)", "", "| key | value |", "|---|---|"]
    lines += [f"| `{k}` | {v if not isinstance(v, float) else f'{v:.4g}'} |" for k, v in sorted(figures.items())]
    return lines + [""]


def write_summary(out: Path, results: dict[str, dict], timing: dict[str, dict] | None = None,
                  quick: bool = False) -> Path:
    """results.json (flat) beside the results folder's RESULTS.md: the goals table, the same
    figures as a table, the run's timing, then every benchmark's own figures."""
    figures = flat(results)
    target = (out.parent if out == TRACKED else out) / "results.json"
    target.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    (out / "RESULTS.md").write_text(_markdown(results, figures, timing, quick))
    return target


def collect(out: Path) -> dict[str, dict]:
    """The figures already in `out` (one JSON per benchmark), for a summary without a rerun."""
    loaded = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}
    return {name: figures for name, figures in loaded.items() if isinstance(figures, dict)}  # not raw records


COST_S = {"incentive": 500, "screening": 380, "window": 240, "flow": 200, "scoring": 95, "audit": 75,
          "sparseloco": 60, "codec": 55}
"""CPU seconds of each benchmark (of each part, for one with `parts`) with one torch thread,
measured on the 2-core machine: only the order matters (longest first, so the short ones fill in
at the end). A benchmark not listed counts as DEFAULT_COST_S."""
DEFAULT_COST_S = 120


@dataclass
class Job:
    name: str
    args: tuple = ()
    """`run_one`'s arguments for one part of a split benchmark; () runs the module's main()."""
    cost: float = DEFAULT_COST_S


@dataclass
class Bench:
    """One benchmark of the run: its output file, its jobs and, as they finish, their results."""

    name: str
    results: Path
    split: bool
    jobs: int = 0
    done: list = field(default_factory=list)
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
                if job.name not in errors and _take(bench, future, errors) and len(bench.done) == bench.jobs:
                    results[job.name] = _finish(bench, quick, errors)
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
            queue += [Job(bench.name, tuple(args), cost) for args in parts]
            bench.jobs = len(parts)
        else:
            queue.append(Job(bench.name, (), cost))
            bench.jobs = 1
    return sorted(queue, key=lambda job: -job.cost)  # stable: a benchmark's parts keep their order


def _take(bench: Bench, future: Future, errors: dict[str, str]) -> bool:
    """One finished job's result into its benchmark; False (and the error noted) when it failed."""
    try:
        start, end, cpu, value = future.result()
    except Exception as exc:  # a benchmark's failure must not stop the others
        errors[bench.name] = f"{type(exc).__name__}: {exc}"
        print(f"== {bench.name} FAILED: {errors[bench.name]}", flush=True)
        return False
    bench.done.append(value)
    bench.spans.append((start, end))
    bench.cpu_s += cpu
    return True


def _finish(bench: Bench, quick: bool, errors: dict[str, str]) -> dict:
    if not bench.split:
        return bench.done[0]
    module = importlib.import_module(f"benchmarks.bench_{bench.name}")
    module.RESULTS = bench.results
    seconds = max(e for _, e in bench.spans) - min(s for s, _ in bench.spans)
    return module.combine(bench.done, quick, seconds)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--write-results", action="store_true",
                       help=f"update the tracked {TRACKED.relative_to(HERE.parent)}/ (default: "
                            f"{SCRATCH.relative_to(HERE.parent)}/, git-ignored)")
    where.add_argument("--out", type=Path, help="write the results to this folder instead")
    parser.add_argument("--collect", action="store_true",
                        help="run nothing: rebuild results.json and RESULTS.md from the JSON files already there")
    parser.add_argument("--quick", action="store_true",
                        help="CI smoke: only the benchmarks with a quick mode (the incentive run's 3 windows), in it")
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)),
                        help="benchmark processes at a time (default: one per CPU this process may use)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    return args


def main(argv: list[str]) -> int:
    args = _parse(argv)
    out = TRACKED if args.write_results else (args.out or SCRATCH)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    if args.collect:
        print(f"summary in {write_summary(out, collect(out), quick=args.quick)}")
        return 0
    names = _names(args.names)
    results, timing, errors = run_benchmarks(names, out, args.quick, args.jobs, named=bool(args.names))
    for name, error in errors.items():
        print(f"benchmarks.run: {name} failed: {error}", file=sys.stderr)
    if not args.names and not errors:
        write_summary(out, results, timing, args.quick)
    print(f"results in {out} ({timing['']['seconds']:.0f} s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
