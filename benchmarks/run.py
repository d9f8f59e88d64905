"""`make bench`: run every benchmark, one torch thread per process, and write the results.

Each `benchmarks/bench_<name>.py` measures ratios within one run (so a noisy machine's drift
cancels), names its output file in its module-level `RESULTS` and writes `<name>.json` there.
The runner points `RESULTS` at its output folder and, when every benchmark ran, writes
RESULTS.md beside them and the headline figures, flat, to `results.json` (`benchmarks/results.json`
for the tracked run); `--collect` rebuilds both from the JSON files already there.

The output folder is `benchmarks/.work/results/` (git-ignored) unless `--write-results` is given:
a run on someone's laptop must not dirty the tracked `benchmarks/results/`, which holds the
figures the README quotes and changes only when someone means to update them.

The benchmarks run `--jobs` processes at a time, longest first (`benchmarks.schedule`), so that
`make bench` fits in 30 minutes on a 2-core machine. `--quick` (CI smoke) runs only the
benchmarks that have a quick mode, in it. RESULTS.md opens with the goals table (`benchmarks.goals`).

    python -m benchmarks.run [--write-results | --out DIR] [--quick] [--jobs N] [NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from benchmarks.goals import goals_section
from benchmarks.schedule import run_benchmarks

HERE = Path(__file__).resolve().parent
TRACKED = HERE / "results"
SCRATCH = HERE / ".work" / "results"


TIMING = "timing.json"
"""The last full run's timing (wall and CPU seconds per benchmark), beside the figures."""


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
    lines += _timing(timing) + goals_section(figures, quick=quick) + _headline(figures)
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
                          "cpu_count", "tensors", "parameters", "evaluated_peers", "seed",
                          # bench_own_test's sample sizes and batch budget
                          "evaluations_honest_work", "evaluations_data_cheats", "own_batches_sampled_mean",
                          "own_batches_available_mean"})
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
    if timing:  # kept, so that a later `--collect` (a benchmark rerun on its own) still reports it
        (out / TIMING).write_text(json.dumps(timing, indent=2) + "\n")
    (out / "RESULTS.md").write_text(_markdown(results, figures, timing, quick))
    return target


def collect(out: Path) -> dict[str, dict]:
    """The figures already in `out` (one JSON per benchmark), for a summary without a rerun; not the
    run's timing, nor the flat summary that `--out` writes into the same folder.

    An extra run of a benchmark written beside it as `<name>_<tag>.json` (e.g. the incentive
    benchmark's other seeds, `incentive_default_seeds1-2.json`) keeps its figures apart: each key
    gets the suffix `_<tag>`, so it never replaces the benchmark's own figure of the same name."""
    names = _names([])
    results: dict[str, dict] = {}
    for path in sorted(out.glob("*.json")):
        if path.name in (TIMING, "results.json"):
            continue
        figures = json.loads(path.read_text())
        if not isinstance(figures, dict):  # raw records (`*_runs.json`, rows), not figures
            continue
        base = next((n for n in names if path.stem.startswith(n + "_")), None)
        if path.stem in names:
            results[path.stem] = figures
        elif base is not None:
            tag = path.stem[len(base) + 1:]
            results[path.stem] = {f"{k}_{tag}": v for k, v in figures.items()}
    return results


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
        timing = json.loads((out / TIMING).read_text()) if (out / TIMING).is_file() else None
        print(f"summary in {write_summary(out, collect(out), timing, quick=args.quick)}")
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
