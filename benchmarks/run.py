"""`make bench`: run every benchmark in one process, one torch thread, and write the results.

Each `benchmarks/bench_<name>.py` measures ratios within one run (so a noisy machine's drift
cancels), names its output file in its module-level `RESULTS` and writes `<name>.json` there.
This runner points `RESULTS` at its output folder and, when every benchmark ran, writes
RESULTS.md beside them and the headline figures, flat, to `results.json` (`benchmarks/results.json`
for the tracked run); `--collect` rebuilds both from the JSON files already there.

The output folder is `benchmarks/.work/results/` (git-ignored) unless `--write-results` is given:
a run on someone's laptop must not dirty the tracked `benchmarks/results/`, which holds the
figures the README quotes and changes only when someone means to update them.

    python -m benchmarks.run [--write-results] [--out DIR] [NAME ...]
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
TRACKED = HERE / "results"
SCRATCH = HERE / ".work" / "results"


def _names(wanted: list[str]) -> list[str]:
    found = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    unknown = sorted(set(wanted) - set(found))
    if unknown:
        raise SystemExit(f"benchmarks.run: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(found)}")
    return [n for n in found if not wanted or n in wanted]


def _markdown(results: dict[str, dict]) -> str:
    lines = ["# Benchmark results", "",
             f"Written by `make bench` on {time.strftime('%Y-%m-%d')}; {platform.machine()}, "
             f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}, "
             f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}.",
             "Ratios were measured within one run; absolute times are for this machine only.", ""]
    for name, figures in results.items():
        lines += [f"## {name}", "", "```json", json.dumps(figures, indent=2, default=str), "```", ""]
    return "\n".join(lines)


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


def write_summary(out: Path, results: dict[str, dict]) -> Path:
    """results.json (flat) beside the results folder's RESULTS.md, which opens with the same table."""
    figures = flat(results)
    target = (out.parent if out == TRACKED else out) / "results.json"
    target.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    md = _markdown(results).split("\n")
    (out / "RESULTS.md").write_text("\n".join(md[:5] + _headline(figures) + md[5:]))
    return target


def collect(out: Path) -> dict[str, dict]:
    """The figures already in `out` (one JSON per benchmark), for a summary without a rerun."""
    loaded = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}
    return {name: figures for name, figures in loaded.items() if isinstance(figures, dict)}  # not raw records


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
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = _parse(argv)
    out = TRACKED if args.write_results else (args.out or SCRATCH)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    if args.collect:
        print(f"summary in {write_summary(out, collect(out))}")
        return 0
    results = {}
    for name in _names(args.names):
        print(f"== {name}", flush=True)
        module = importlib.import_module(f"benchmarks.bench_{name}")
        if not isinstance(getattr(module, "RESULTS", None), Path):
            raise SystemExit(f"benchmarks.run: bench_{name}.py must name its output file in RESULTS")
        module.RESULTS = out / f"{name}.json"
        results[name] = module.main()
    if not args.names:
        write_summary(out, results)
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
