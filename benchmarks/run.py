"""`make bench`: run every benchmark in one process, one torch thread, and write the results.

Each `benchmarks/bench_<name>.py` measures ratios within one run (so a noisy machine's drift
cancels) and writes `benchmarks/results/<name>.json`; this runner also writes RESULTS.md.
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def _names(argv: list[str]) -> list[str]:
    found = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    return [n for n in found if not argv or n in argv]


def _markdown(results: dict[str, dict]) -> str:
    lines = ["# Benchmark results", "",
             f"Written by `make bench` on {time.strftime('%Y-%m-%d')}; {platform.machine()}, "
             f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}, "
             f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}.",
             "Ratios were measured within one run; absolute times are for this machine only.", ""]
    for name, figures in results.items():
        lines += [f"## {name}", "", "```json", json.dumps(figures, indent=2, default=str), "```", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    results = {}
    for name in _names(argv):
        print(f"== {name}", flush=True)
        results[name] = importlib.import_module(f"benchmarks.bench_{name}").main()
    (HERE / "results").mkdir(exist_ok=True)
    if not argv:
        (HERE / "results" / "RESULTS.md").write_text(_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
