"""The own-data test's error rates, margin rule against the sequential test (issue 10).

One local network of the `tiny` model (honest, lazy, diligent, data_ignorer, replayer, copycat;
`MIX`) runs `WINDOWS` windows under the `default` preset, validated by the direct pipeline. After
each window, every peer evaluated by loss is scored again on ALL its own batches (the sampled
ones, then the others in the sequential test's draw order, `evaluate.own_batches`) and on the
window's random batches, keeping each batch's losses. Both rules are then decided from the same
recorded numbers, so they are compared on identical inputs:

- margin: `uniqueness.indicator(r_own, s, 0.2)` on the sampled batches' token-weighted means (the
  PeerLosses the validator recorded; the bench checks it recomputes them bit for bit);
- sequential: `uniqueness.sequential_own_test` on the sampled batches, drawing the recorded extra
  batches in order while undecided, with the knobs of `SEQUENTIAL` (also a small grid, `grid`),
  chosen on another seed's run than the one reported (`SEED`).

Flat keys: `own_test_margin_fn` / `_fp` (honest work marked -1 / data cheats marked +1),
`own_test_sequential_fn` / `_fp`, `own_test_undecided_share` (b = 0 among all evaluations),
`own_test_extra_batches` (mean own batches drawn beyond the sampled ones, per evaluation), and
each rule's mean b per class (`own_test_<rule>_mean_b_honest` / `_cheats`): B follows it, and
F = ordinal * max(0, B) * sync pays a data cheat only while it is positive.
`spread` reports the measured per-batch standard deviation relative to |s| (the floor's basis).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "own_test.json"
MIX = ["honest"] * 3 + ["lazy", "diligent", "data_ignorer", "replayer", "copycat"]
HONEST_WORK = ("honest", "lazy", "diligent")
DATA_CHEATS = ("data_ignorer", "replayer", "copycat", "copycat_noisy")
OVERRIDES = {"data": {"rows_per_page": 8}, "filter": {"put_window_s": 0.5}}
"""8 rows a page (local.toml: 16): about 6 own batches a peer, 3 of them sampled at rate 0.5."""
WINDOWS, QUICK_WINDOWS = 10, 3
SEED = 1
"""The reported run's seed: it sets the model's initial weights and the windows' random seeds
(the network's own seed alone changes nothing an honest peer does). The knobs of SEQUENTIAL were
chosen on seed 0's records (the grid there), so the figures of seed 1 are out of sample."""
MARGIN = 0.2
SEQUENTIAL = {"margin": 0.0, "z": 2.0, "sd_floor": 0.3, "max_batches": 8, "undecided": "negative"}
GRID = [{**SEQUENTIAL, "margin": m, "z": z, "sd_floor": f, "undecided": u} for u in ("zero", "sign", "negative")
        for m in (0.0, 0.2) for z in (1.5, 2.0, 2.5) for f in (0.15, 0.3, 0.5)]


def _record_window(cfg, result) -> list[dict]:
    """Every evaluated peer's per-batch losses on all its own batches and the random batches."""
    from gauntlet.scoring import LossEvaluator, more_batches, score_peer_batches
    from gauntlet.window.context import context_for
    from gauntlet.window.evaluate import _random_batches, own_batches
    from gauntlet.window.load import load_submission

    plan, rows = result.plan, []
    ctx = context_for(cfg)
    with ctx.lock:
        ctx.load_theta(cfg.validator.workdir, plan.window)
        evaluator = LossEvaluator(ctx.model, ctx.device)
        rand = _random_batches(cfg, ctx, plan)
        rand_sums = evaluator.batch_sums(evaluator.theta, rand)
        for uid, recorded in sorted(result.evaluated.losses.items()):
            sub = load_submission(cfg, ctx, plan, result.fetched.by_uid()[uid])
            after = evaluator.perturbed(ctx.codec.decode_all(sub.grads, ctx.spec.shapes),
                                        cfg.scoring.eval_lr_factor * plan.lr)
            sampled, extra = own_batches(cfg, ctx, plan, uid)
            losses, own, rand_l = score_peer_batches(evaluator, uid, after, sampled, rand, rand_sums)
            if losses != recorded:
                raise AssertionError(f"window {plan.window} uid {uid}: per-batch scoring gives {losses}, "
                                     f"the validator recorded {recorded}")
            more = more_batches(evaluator, after, extra).improvements if extra else []
            rows.append({"window": plan.window, "uid": uid, "s": losses.gradient_score,
                         "r_own": losses.own_improvement, "b_recorded": result.evaluated.scores[uid].indicator,
                         "own": own.improvements, "extra": more, "rand": rand_l.improvements})
    return rows


def run_network(windows: int, seed: int = 0) -> tuple[dict[int, str], list[dict]]:
    import torch

    torch.set_num_threads(1)
    from benchmarks.bench_incentive import _prepare_data
    from gauntlet.localnet.network import init_network
    from gauntlet.localnet.simulate import run_network as run
    from gauntlet.ratings import ValidatorState
    from gauntlet.window.pipeline import Direct, validate_window

    with tempfile.TemporaryDirectory(prefix="bench-own-test-") as tmp:
        data = Path(_prepare_data(Path(tmp)))
        varied = {"model": {"init_seed": seed}, "scoring": {"salt": "gauntlet" if seed == 0 else f"gauntlet-{seed}"}}
        net = init_network(Path(tmp) / "net", behaviours=MIX, seed=seed, corpus=data / "corpus",
                           tokenizer=data / "tokenizer", overrides={"preset": "default", **OVERRIDES, **varied})
        cfg, state, rows = net.config, [ValidatorState()], []

        def validate(window: int) -> None:
            result = validate_window(Direct(), cfg, window, state=state[0])
            state[0] = result.rated.state
            rows.extend(_record_window(cfg, result))

        run(net, windows, validate)
        return {p.uid: p.behaviour for p in net.peers}, rows


def sequential_b(row: dict, knobs: dict) -> tuple[int, int]:
    """(b, own batches used) of the sequential test on a recorded evaluation."""
    from gauntlet.uniqueness import sequential_own_test

    extra = iter(row["extra"])
    test = sequential_own_test(row["own"], row["rand"], row["s"], lambda: next(extra, None), **knobs)
    return test.indicator, test.own_batches


def _classes(rows: list[dict], behaviour: dict[int, str]) -> tuple[list[dict], list[dict]]:
    """(honest-work evaluations, data-cheat evaluations). A replayer's first evaluation is in
    neither: that update is its honest work on its own pages of that window."""
    from benchmarks.incentive_figures import first_windows

    first = first_windows(rows, {u for u, b in behaviour.items() if b == "replayer"})
    honest = [r for r in rows if behaviour[r["uid"]] in HONEST_WORK]
    cheats = [r for r in rows if behaviour[r["uid"]] in DATA_CHEATS and first.get(r["uid"]) != r["window"]]
    return honest, cheats


def error_rates(rows: list[dict], behaviour: dict[int, str], decide) -> dict:
    """fn: honest work marked -1; fp: data cheats marked +1; undecided: b = 0 among all; extra:
    mean extra own batches per evaluation; mean_b_*: each class's mean b (where B heads)."""
    honest_rows, cheat_rows = _classes(rows, behaviour)
    honest, cheats, every = ([decide(r) for r in rs] for rs in (honest_rows, cheat_rows, rows))
    return {"fn": _share([b for b, _ in honest], -1), "fp": _share([b for b, _ in cheats], 1),
            "undecided": _share([b for b, _ in every], 0),
            "extra": round(statistics.fmean(n - len(r["own"]) for (_, n), r in zip(every, rows)), 4) if rows else None,
            "mean_b_honest": _mean([b for b, _ in honest]), "mean_b_cheats": _mean([b for b, _ in cheats]),
            "honest_n": len(honest), "cheats_n": len(cheats)}


def _mean(values: list[int]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def _share(values: list[int], target: int) -> float | None:
    return round(sum(v == target for v in values) / len(values), 4) if values else None


def spread(rows: list[dict], behaviour: dict[int, str]) -> dict:
    """Per-batch standard deviation of the improvements over |s|, where >= 3 batches give one."""
    out = {}
    for side in ("own", "rand"):
        ratios = [statistics.stdev(v) / abs(r["s"]) for r in rows
                  for v in [r["own"] + r["extra"] if side == "own" else r["rand"]]
                  if len(v) >= 3 and r["s"] != 0 and behaviour[r["uid"]] in HONEST_WORK]
        out[side] = ({"median": round(statistics.median(ratios), 4), "p90": round(_quantile(ratios, 0.9), 4),
                      "n": len(ratios)} if ratios else None)
    return out


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def figures(behaviour: dict[int, str], rows: list[dict]) -> dict:
    from gauntlet.uniqueness import indicator

    margin = error_rates(rows, behaviour, lambda r: (indicator(r["r_own"], r["s"], MARGIN), len(r["own"])))
    seq = error_rates(rows, behaviour, lambda r: sequential_b(r, SEQUENTIAL))
    grid = [{**k, **error_rates(rows, behaviour, lambda r, k=k: sequential_b(r, k))} for k in GRID]
    return {"own_test_margin_fn": margin["fn"], "own_test_margin_fp": margin["fp"],
            "own_test_sequential_fn": seq["fn"], "own_test_sequential_fp": seq["fp"],
            "own_test_undecided_share": seq["undecided"], "own_test_extra_batches": seq["extra"],
            "own_test_margin_mean_b_honest": margin["mean_b_honest"],
            "own_test_margin_mean_b_cheats": margin["mean_b_cheats"],
            "own_test_sequential_mean_b_honest": seq["mean_b_honest"],
            "own_test_sequential_mean_b_cheats": seq["mean_b_cheats"],
            "evaluations_honest_work": seq["honest_n"], "evaluations_data_cheats": seq["cheats_n"],
            "own_batches_sampled_mean": round(statistics.fmean(len(r["own"]) for r in rows), 3) if rows else None,
            "own_batches_available_mean": (round(statistics.fmean(len(r["own"]) + len(r["extra"]) for r in rows), 3)
                                           if rows else None),
            "sequential_knobs": SEQUENTIAL, "margin_rule": {"own_margin": MARGIN}, "spread": spread(rows, behaviour),
            "grid": grid}


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    quick = "--quick" in argv
    start = time.perf_counter()
    behaviour, rows = run_network(QUICK_WINDOWS if quick else WINDOWS, SEED)
    out = figures(behaviour, rows)
    out.update({"mode": "quick" if quick else "full", "mix": MIX, "seed": SEED,
                "seconds_total": round(time.perf_counter() - start, 1)})
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2, default=_jsonable) + "\n")
    rows_file = RESULTS.with_name(RESULTS.stem + "_rows.json")  # a list: benchmarks.run --collect skips it
    rows_file.write_text(json.dumps([{**r, "behaviour": behaviour[r["uid"]]} for r in rows], default=_jsonable) + "\n")
    return out


def _jsonable(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


if __name__ == "__main__":
    print(json.dumps({k: v for k, v in main().items() if k != "grid"}, indent=2, default=_jsonable))
