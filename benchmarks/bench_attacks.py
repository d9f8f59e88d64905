"""Validation loss under every attack, one attack at a time (issue 10's "under every attack").

The incentive benchmark runs one network with every attack at once, so it cannot say which
attack a rule handles worse than Gauntlet, nor whether a 1 % difference is more than chance.
Here each attack gets its own `tiny` network: 5 `honest` peers plus 2 copies of the attack
(29 % hostile), the `default` preset, `windows` windows, the same Shadows machinery as the
incentive benchmark (shadow.py: every aggregation rule stepped on the same files). Per attack:
the loss ratio (held-out loss over the honest-only shadow's) of every rule and of Gauntlet's
gather set, and the gap Gauntlet minus the best robust rule (plain mean is not robust).

Noise: two honest-only networks (7 `honest` peers) that differ in the model's init seed and in
their data. Honest peers' pages depend only on uid and window, so the network seed alone would
replay the same run: the second network starts at window NOISE_START (chain.start_window, so
its learning-rate schedule is the same) and trains on other pages. The change of each ratio
(Gauntlet's and the robust rules') between the two is what chance moves a ratio by:
`attack_loss_noise` is its mean, `attack_loss_noise_max` its largest. A gap under the noise is
not evidence either way.

Also per attack: the files Gauntlet's step averaged per window and the attack's share of them
(`gathered`), to tell an attack getting through from fewer honest files averaged; and who was
paid (`honest_pay`): the share of honest peers' windows after the first gather list (PAY_FROM)
that paid them nothing, and the spread (CV) of their cumulative pay. In the honest-only networks
these say what the rating does when there is no attacker to rank last. `scaled` does
honest work and unit-norm aggregation undoes its x100, so its network is the honest one's.

Every rule is told to tolerate f = 2 (the attackers' count) in every network, the honest-only
ones included, so the rules behave alike in the noise runs and under attack. Each network is one
job (`parts`/`run_one`/`combine`, scheduled by `benchmarks.run`). `--quick` (CI smoke): one
attack, 2 windows, no noise runs. Figures in `RESULTS` (benchmarks/results/attacks.json).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "attacks.json"
ATTACKS = ("alie", "ipm", "sandbagger", "scaled", "sign_flip", "noise", "replayer", "data_ignorer")
"""The local network's behaviours whose files reach aggregation and push the model off course
(the ones stage 1 rejects, or that copy honest files, cannot move a shadow)."""
HONEST, COPIES = 5, 2
NONE = "none"
"""The attack name of the honest-only noise networks."""
NOISE_INIT_SEEDS = (0, 1)
NOISE_START = 1000
"""The second noise network's first window: its pages are drawn at other offsets."""
FULL = {"windows": 12, "attacks": ATTACKS, "noise": True}
"""12 windows: 10 networks of ~70 CPU s each, ~6 minutes on two free cores (743 s wall measured
on a shared, loaded one); the loss falls ~6 % from its initial value in that time."""
QUICK = {"windows": 2, "attacks": ATTACKS[:1], "noise": False}
PAY_FROM = 4
"""Pay is counted from the 5th window on: the first gather list takes effect then (the windows
before it aggregate every accepted file, and the first ratings come from one or two matches)."""
ROBUST = ("median", "trimmed_mean", "krum", "multi_krum", "centered_clipping", "bulyan")
"""The rules of aggregators.RULES that claim robustness (plain mean does not)."""


def roster(attack: str) -> list[str]:
    """5 honest peers and 2 attackers, or 7 honest peers for the noise runs."""
    if attack != NONE and attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; choose from {', '.join((NONE, *ATTACKS))}")
    return ["honest"] * HONEST + ["honest" if attack == NONE else attack] * COPIES


def run_one(attack: str, init_seed: int, windows: int, data_dir: str, start_window: int = 0) -> dict:
    """One network: the held-out loss of every shadow and of Gauntlet's model after `windows`,
    from window `start_window` on (other pages, the same learning-rate schedule)."""
    import torch

    torch.set_num_threads(1)
    from benchmarks.bench_incentive import OVERRIDES, score_records
    from benchmarks.shadow import Shadows
    from gauntlet.localnet.network import init_network
    from gauntlet.localnet.simulate import open_miners, run_network
    from gauntlet.ratings import ValidatorState
    from gauntlet.window.pipeline import Direct, validate_window

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"bench-attacks-{attack}-{init_seed}-") as tmp:
        overrides = {"preset": "default", **OVERRIDES, "model": {"init_seed": init_seed},
                     "chain": {"start_window": start_window}}
        net = init_network(Path(tmp) / "net", behaviours=roster(attack), seed=init_seed,
                           corpus=Path(data_dir) / "corpus", tokenizer=Path(data_dir) / "tokenizer",
                           overrides=overrides)
        state, aggregated, weights = [ValidatorState()], [], []
        miners = open_miners(net)
        shadows = Shadows(miners, [p.uid for p in net.peers if p.behaviour == "honest"], f=COPIES)

        def validate(window: int) -> None:
            rated = validate_window(Direct(), net.config, window, state=state[0]).rated
            state[0] = rated.state
            weights.append({str(u): w for u, w in sorted(rated.weights.items())})

        def on_report(report) -> None:
            aggregated.append(sorted(report.aggregated) if report.stepped else [])
            shadows.step(report)

        run_network(net, windows, validate, miners=miners, on_report=on_report)
        return {"attack": attack, "init_seed": init_seed, "start_window": start_window, "windows": windows,
                "attackers": [p.uid for p in net.peers if p.behaviour == attack], "aggregated": aggregated,
                "honest": [p.uid for p in net.peers if p.behaviour == "honest"], "weights": weights,
                "anchor": net.config.rating.anchor, "merge": net.config.aggregation.merge,
                "scores": score_records(net.config.audit.root),
                "loss": shadows.losses(), "seconds": round(time.perf_counter() - start, 1)}


def parts(quick: bool, scratch: Path) -> list[tuple]:
    """`run_one`'s arguments: one network per attack, then the noise networks; the corpus is
    prepared once under `scratch` (which must outlive the runs)."""
    from benchmarks.bench_incentive import _prepare_data

    return arguments(QUICK if quick else FULL, _prepare_data(Path(scratch)))


def arguments(mode: dict, data: str) -> list[tuple]:
    """`run_one`'s arguments for a mode: the attacks at init seed 0 from window 0, then the noise
    networks, each at its own init seed and start window."""
    runs = [(a, NOISE_INIT_SEEDS[0], mode["windows"], data) for a in mode["attacks"]]
    noise = [(NONE, s, mode["windows"], data, NOISE_START * i) for i, s in enumerate(NOISE_INIT_SEEDS)]
    return runs + (noise if mode["noise"] else [])


def ratios(run: dict) -> dict[str, float]:
    """Every rule's and Gauntlet's held-out loss over the honest-only shadow's."""
    from benchmarks.aggregators import RULES

    loss = run["loss"]
    if not loss.get("honest_only"):
        raise ValueError(f"run {run.get('attack')!r} has no honest-only loss: {sorted(loss)}")
    return {name: loss[name] / loss["honest_only"] for name in [*RULES, "gauntlet"]}


def figures(runs: list[dict]) -> dict:
    """The flat per-attack figures, the gap's worst case and the noise (see the module docstring)."""
    out: dict[str, object] = {}
    gaps = {}
    for run in (r for r in runs if r["attack"] != NONE):
        a, r = run["attack"], ratios(run)
        best = min(ROBUST, key=r.__getitem__)
        gaps[a] = r["gauntlet"] - r[best]
        out |= {f"attack_loss_ratio_gauntlet_{a}": round(r["gauntlet"], 4),
                f"attack_loss_ratio_best_{a}": round(r[best], 4), f"attack_best_rule_{a}": best, f"attack_gauntlet_gap_{a}": round(gaps[a], 4),
                f"attack_loss_ratios_{a}": {k: round(v, 4) for k, v in r.items()}}
        size, share = gathered(run)
        out |= {f"attack_gauntlet_aggregated_mean_{a}": size, f"attack_attacker_share_aggregated_{a}": share}
        zeroed, cv = honest_pay(run)
        out |= {f"attack_honest_zeroed_share_{a}": zeroed, f"attack_honest_pay_cv_{a}": cv}
    out["attack_gauntlet_gap_worst"] = round(max(gaps.values()), 4) if gaps else None
    out["attack_worst"] = max(gaps, key=gaps.__getitem__) if gaps else None
    noise = noise_runs(runs)
    changes = [abs(noise[0][k] - noise[1][k]) for k in ("gauntlet", *ROBUST)] if noise else []
    out["attack_loss_noise"] = round(statistics.fmean(changes), 4) if changes else None
    out["attack_loss_noise_max"] = round(max(changes), 4) if changes else None
    if noise:
        out["attack_loss_ratios_honest_only"] = [{k: round(v, 4) for k, v in n.items()} for n in noise]
        out["attack_gauntlet_aggregated_mean_honest_only"] = gathered(next(r for r in runs if r["attack"] == NONE))[0]
    pays = [honest_pay(r) for r in runs if r["attack"] == NONE]
    pays = [p for p in pays if p[0] is not None]
    if pays:  # the mean over the honest-only networks
        out["attack_honest_zeroed_share_honest_only"] = round(statistics.fmean(p[0] for p in pays), 4)
        out["attack_honest_pay_cv_honest_only"] = round(statistics.fmean(p[1] for p in pays), 4)
    out["attack_gap_over_noise"] = ([a for a, g in gaps.items() if g > out["attack_loss_noise"]]
                                    if changes else None)
    return out


def gathered(run: dict) -> tuple[float | None, float | None]:
    """Files Gauntlet's step averaged per window (mean), and the attackers' share of them: whether
    a gap comes from attackers getting in or from averaging fewer honest files (None: not recorded)."""
    steps = [uids for uids in run.get("aggregated", []) if uids]
    if not steps:
        return None, None
    bad = set(run.get("attackers", []))
    share = sum(len(bad & set(u)) for u in steps) / sum(len(u) for u in steps)
    return round(statistics.fmean(len(u) for u in steps), 2), round(share, 4)


def honest_pay(run: dict) -> tuple[float | None, float | None]:
    """From window PAY_FROM on: the share of (window, honest peer) pairs with weight 0, and the
    coefficient of variation (population) of the honest peers' cumulative weight (None, None:
    weights not recorded, or no window that late)."""
    paid = run.get("weights", [])[PAY_FROM:]
    honest = [str(u) for u in run.get("honest", [])]
    if not paid or not honest:
        return None, None
    zeroed = sum(1 for w in paid for u in honest if w.get(u, 0.0) <= 0) / (len(paid) * len(honest))
    totals = [sum(w.get(u, 0.0) for w in paid) for u in honest]
    mean = statistics.fmean(totals)
    cv = statistics.pstdev(totals) / mean if mean > 0 else None
    return round(zeroed, 4), None if cv is None else round(cv, 4)


def noise_runs(runs: list[dict]) -> list[dict[str, float]]:
    """The ratios of the two honest-only networks, or [] when fewer than two ran."""
    honest = sorted((r for r in runs if r["attack"] == NONE), key=lambda r: r["init_seed"])
    return [ratios(r) for r in honest[:2]] if len(honest) >= 2 else []


def combine(runs: list[dict], quick: bool, seconds: float | None) -> dict:
    """The figures of finished runs written to `RESULTS`, the runs beside it (`*_runs.json`)."""
    mode = QUICK if quick else FULL
    out = figures(runs)
    out |= {"mode": "quick" if quick else "full", "windows": mode["windows"], "peers": HONEST + COPIES,
            "attackers_per_network": COPIES, "attack_loss_initial": round(runs[0]["loss"]["initial"], 4),
            "attack_seconds_per_network": round(statistics.fmean(r["seconds"] for r in runs), 1),
            "attack_seconds_total": None if seconds is None else round(seconds, 1)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    name = RESULTS.stem + ("_quick" if quick else "")
    (RESULTS.parent / f"{name}.json").write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS.parent / f"{name}_runs.json").write_text(json.dumps(runs) + "\n")  # a list: not a figures file
    return out


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    quick = "--quick" in argv
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-attacks-data-") as tmp:
        runs = [run_one(*args) for args in parts(quick, Path(tmp))]
    return combine(runs, quick, time.perf_counter() - start)


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
