"""Who gets paid, measured (issue 10): long local-network runs under the `default` and `paper` presets.

One run = one local network of the `tiny` model (MIX: 8 peers doing honest work at three effort
levels, 5 hostile = 38 %), `windows` windows of miners, the direct validator after each ready
window. The same seeds run under both presets; a seed sets the model's init and the windows the
network starts at (so its pages), see SEED_START. Per run it records every window's weights, every
evaluated peer's (s, r_own, b) from the audit `scores` table, and, on the same submissions, the
model each alternative aggregation rule would have reached (`shadow.py`).

Figures (flat keys; `*_paper` for the paper preset): see `incentive_figures`. Written to
`RESULTS` (benchmarks/results/incentive.json; `benchmarks.run` points it at its output folder),
the per-window records beside it (incentive_runs.json) and the chart incentive.png. `--quick`
(CI smoke) runs 3 windows and writes incentive_quick*. `--seeds=1,2 [--preset=default]` runs
other seeds of one preset on their own (make bench runs seed 0 of both, to stay under 30
minutes) and writes incentive_<preset>_seeds1-2*.

Each (preset, seed) run is one process: `parts` lists them for `benchmarks.run`, which schedules
them with the other benchmarks on the machine's cores, and `combine` makes the figures of them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "incentive.json"
MIX = (["honest"] * 5 + ["lazy", "diligent", "scaled"]
       + ["alie", "ipm", "sandbagger", "replayer", "data_ignorer"])
WORK = {"lazy": 0.5, "honest": 1.0, "diligent": 2.0}
"""Work per behaviour for the monotonicity figure (pages trained, relative to honest)."""
DATA_CHEATS = ("data_ignorer", "replayer", "copycat", "copycat_noisy")
"""Behaviours whose update is not from their own pages: the own-data test should give them b = -1."""
OVERRIDES = {"data": {"rows_per_page": 4}, "filter": {"put_window_s": 0.5}}
"""Fewer rows per page than local.toml (3 batches a peer, not 11): a window costs ~1/4 as much."""
FULL = {"windows": 30, "seeds": (0,), "warmup": 5}
QUICK = {"windows": 3, "seeds": (0,), "warmup": 1}
PRESETS = ("default", "paper")
LOSS_EVERY = 5
PARTIAL = Path(tempfile.gettempdir()) / "gauntlet-bench-incentive"
"""Each run's records, rewritten after every window (`--from-partial` makes figures of them)."""
MARGINS = [round(0.05 * i, 2) for i in range(-4, 21)]
SEED_START = 1000
"""Seed s > 0 starts its network at window s * SEED_START with model init seed s: peers' pages
depend only on uid and window, so the network seed alone would replay seed 0's run exactly
(measured: seeds 1 and 2 gave seed 0's figures to the last digit)."""


def run_one(preset: str, seed: int, windows: int, data_dir: str, partial: str | None = None,
            size: str = "tiny") -> dict:
    """One network, one preset, one model size: the per-window records (JSON-able), also written
    to `partial` after every validated window (so an interrupted run still leaves its windows)."""
    import torch

    torch.set_num_threads(1)
    from benchmarks.shadow import Shadows
    from gauntlet.localnet.network import init_network
    from gauntlet.localnet.simulate import open_miners, run_network
    from gauntlet.ratings import ValidatorState
    from gauntlet.window.pipeline import Direct, validate_window

    with tempfile.TemporaryDirectory(prefix=f"bench-incentive-{preset}-{seed}-") as tmp:
        start_window = SEED_START * seed
        net = init_network(Path(tmp) / "net", behaviours=MIX, seed=seed, corpus=Path(data_dir) / "corpus",
                           tokenizer=Path(data_dir) / "tokenizer",
                           overrides={"preset": preset, **OVERRIDES,
                                      "model": {"init_seed": seed, "size": size},
                                      "chain": {"start_window": start_window}})
        cfg, state, weights, seconds = net.config, [ValidatorState()], {}, []
        miners = open_miners(net)
        shadows = Shadows(miners, [p.uid for p in net.peers if p.behaviour == "honest"],
                          f=sum(p.uid not in net.honest_work for p in net.peers))

        miner_seconds: list[float] = []
        loss: dict[str, float] = {}

        def record(with_loss: bool = True) -> dict:
            if with_loss:  # held-out loss of 10 models: every LOSS_EVERY windows in the partial file
                loss.update(shadows.losses(), windows=len(weights))
            return {"preset": preset, "seed": seed, "size": size, "behaviour": {p.uid: p.behaviour for p in net.peers},
                "honest_work": net.honest_work, "weights": weights, "scores": score_records(cfg.audit.root),
                "loss": dict(loss), "own_margin": cfg.uniqueness.own_margin, "power": cfg.weights.power,
                "own_data": cfg.weights.own_data, "score_ema": cfg.weights.score_ema,
                "anchor": cfg.rating.anchor, "merge": cfg.aggregation.merge,
                "seconds_validate": seconds, "seconds_miners": miner_seconds}

        def validate(window: int) -> None:
            start = time.perf_counter()
            result = validate_window(Direct(), cfg, window, state=state[0])
            state[0] = result.rated.state
            weights[window] = {int(u): float(w) for u, w in result.rated.weights.items()}
            seconds.append(time.perf_counter() - start)
            if partial:
                Path(partial).write_text(json.dumps(record(not loss or len(weights) % LOSS_EVERY == 0), default=_jsonable))

        def on_report(report) -> None:
            miner_seconds.append(report.seconds.get("total", 0.0))
            shadows.step(report)

        run_network(net, windows, validate, miners=miners, on_report=on_report)
        return record()


def score_records(audit_root: str | Path) -> list[dict]:
    """Every evaluated peer's (window, uid, s, r_own, b) from a network's audit `scores` table, and
    the sequential own-data test's difference `d` and standard error `se` (None under the margin
    rule): what the figures and the re-rating what-ifs (`incentive_figures.rerated`) read."""
    from gauntlet.audit.store import AuditStore

    return [{"window": int(r["window_id"]), "uid": int(r["uid"]), "s": r["gradient_score"],
             "r_own": r["own_improvement"], "b": r["indicator"], "d": r["own_difference"], "se": r["own_std_error"]}
            for r in AuditStore(audit_root).read("scores").to_dicts()]


def _prepare_data(root: Path) -> str:
    from gauntlet.prepare import prepare

    prepare(None, root / "corpus", root / "tokenizer")
    return str(root)


def _tasks(mode: dict, data: str, presets: tuple[str, ...] = PRESETS) -> list[tuple]:
    """The arguments of `run_one` for every (preset, seed) of `mode`, each with its partial file."""
    PARTIAL.mkdir(parents=True, exist_ok=True)
    tag = "-quick" if mode is QUICK else ""  # a quick run beside a full one must not overwrite its records
    size = mode.get("size", "tiny")
    tag += "" if size == "tiny" else f"-{size}"
    return [(p, s, mode["windows"], data, str(PARTIAL / f"{p}-{s}{tag}.json"), size)
            for s in mode["seeds"] for p in presets]


def parts(quick: bool, scratch: Path) -> list[tuple]:
    """The arguments of every `run_one` of the mode, the corpus prepared once under `scratch`
    (which must outlive the runs)."""
    return _tasks(QUICK if quick else FULL, _prepare_data(Path(scratch)))


def run_all(mode: dict, jobs: int = 2, presets: tuple[str, ...] = PRESETS) -> list[dict]:
    """Every (preset, seed) run, `jobs` processes at a time (one torch thread each)."""
    with tempfile.TemporaryDirectory(prefix="bench-incentive-data-") as tmp:
        tasks = _tasks(mode, _prepare_data(Path(tmp)), presets)
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            return list(pool.map(run_one, *zip(*tasks)))


def combine(runs: list[dict], quick: bool, seconds: float | None, partial: bool = False,
            mode: dict | None = None, name: str | None = None) -> dict:
    """The figures of finished runs (`partial`: of interrupted ones, as far as all of them got),
    written with the records and the chart beside `RESULTS` (as `name`.json, default the mode's)."""
    from benchmarks.incentive_figures import chart, figures

    mode = mode or (QUICK if quick else FULL)
    out = figures(runs, mode["warmup"])
    validated = min(len(r["weights"]) for r in runs)
    out.update({"mode": "quick" if quick else "full", "windows": validated if partial else mode["windows"],
                "seeds": list(mode["seeds"]), "size": mode.get("size", "tiny"), "windows_validated": validated,
                "peers": len(MIX), "mix": MIX, "seconds_total": None if seconds is None else round(seconds, 1)})
    folder = RESULTS.parent
    folder.mkdir(parents=True, exist_ok=True)
    name = name or RESULTS.stem + ("_quick" if quick else "")
    (folder / f"{name}.json").write_text(json.dumps(out, indent=2, default=_jsonable) + "\n")
    (folder / f"{name}_runs.json").write_text(json.dumps(runs, default=_jsonable) + "\n")
    chart(runs, folder / f"{name}.png")
    return out


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_incentive", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke: 3 windows, written as incentive_quick*")
    parser.add_argument("--seeds", help="other seeds of one preset, run on their own, e.g. 1,2")
    parser.add_argument("--preset", default="default", help="the preset of --seeds (default: default)")
    parser.add_argument("--size", default="tiny", help="the model size of --seeds (default: tiny; written as "
                        "incentive_<preset>_<size>_seeds<...> when not tiny)")
    parser.add_argument("--windows", type=int, help=f"windows of --seeds runs (default: {FULL['windows']})")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--from-partial", action="store_true", help="figures of an interrupted run's per-window records")
    again.add_argument("--from-runs", action="store_true", help="figures again from a finished run's records")
    parser.add_argument("--name", help="with --from-runs: the records' name, e.g. incentive_default_seeds1-2")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = _parse(sys.argv[1:] if argv is None else argv)
    quick, start = args.quick, time.perf_counter()
    name = args.name or RESULTS.stem + ("_quick" if quick else "")
    if args.seeds:  # more seeds than make bench runs, one preset
        mode = {**FULL, "seeds": tuple(int(x) for x in args.seeds.split(",")), "size": args.size,
                "windows": args.windows or FULL["windows"]}
        runs = run_all(mode, presets=(args.preset,))
        tag = "-".join(str(x) for x in mode["seeds"])
        size = "" if args.size == "tiny" else f"{args.size}_"
        return combine(runs, False, time.perf_counter() - start, mode=mode,
                       name=f"{RESULTS.stem}_{args.preset}_{size}seeds{tag}")
    if args.from_partial:  # the figures of an interrupted run, from its per-window records
        runs = [json.loads(p.read_text()) for p in sorted(PARTIAL.glob("*.json")) if p.stem.endswith("-quick") == quick]
    elif args.from_runs:  # the figures again (new figures code) from a finished run's records
        runs = json.loads((RESULTS.parent / f"{name}_runs.json").read_text())
        previous = RESULTS.parent / f"{name}.json"  # the run's own duration, size and length, not this one's
        before = json.loads(previous.read_text()) if previous.is_file() else {}
        seconds = before.get("seconds_total")
        mode = {**(QUICK if quick else FULL), "seeds": tuple(sorted({int(r["seed"]) for r in runs}))}
        mode.update({k: before[k] for k in ("size", "windows") if before.get(k) is not None})
        return combine(runs, quick, seconds, mode=mode, name=name)
    else:
        runs = run_all(QUICK if quick else FULL)
    return combine(runs, quick, time.perf_counter() - start, partial=args.from_partial)


def _jsonable(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


if __name__ == "__main__":
    print(json.dumps(main(), indent=2, default=_jsonable))
