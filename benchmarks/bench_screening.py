"""Screening on a local network: the same submissions validated with exact scoring and screened.

A default-mix network of PEERS peers (the `tiny` model, the local network's settings) mines
MINED windows; every ready window is then validated twice, alternating, into two validator
folders and audit roots: exact scoring of every chosen peer (the network's own validator), and
`screening.enabled` (each variant of VARIANTS). Each validator carries its own state (ratings, B,
gather schedule) from window to window, but both score window W against the same theta_W: the
exact run's checkpoint is copied into the screened folder before each window, so what differs is
the scoring alone (a different gather set would otherwise move theta as well).

Per window: the weight that moves, sum |w_screened - w_exact| / 2 over the total weight (the
issue's acceptance: at most 1% in every window); the gather sets; Spearman and top-G overlap of
the first-order estimates and of the screened result (exact where chosen, calibrated elsewhere)
against exact scoring; peers scored exactly; and the evaluate stage's CPU seconds
(`time.process_time`, one torch thread: the neighbours' load on a shared machine does not count)
exact over screened.

Writes the `screening_*` figures to benchmarks/results/screening.json (`benchmarks.run` names it so too).
Run: `.venv/bin/python -m benchmarks.bench_screening` (about 6 CPU minutes; mining is most of the wall time).
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch

from gauntlet.audit.store import AuditStore
from gauntlet.config import GauntletConfig, with_overrides
from gauntlet.localnet.network import default_mix, init_network
from gauntlet.localnet.simulate import run_network
from gauntlet.screening import spearman, topg_overlap
from gauntlet.state import restore_state
from gauntlet.window.audit import WindowResult
from gauntlet.window.context import checkpoint_path
from gauntlet.window.pipeline import Direct, validate_window

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
RESULTS = HERE / "results" / "screening.json"
PEERS, MINED = 21, 6
ACCEPT = 0.01
"""The issue's acceptance: weights within 1% of the total weight in every window."""
VARIANTS: dict[str, dict] = {
    "default": {},
    "lean": {"margin": 0, "max_near": 2, "audit_peers": 1},
}
"""Screening settings measured: the config's defaults, and a leaner exact set (the top G, two
near the cutoff, one audit draw) to see what a smaller exact set costs in weight."""


class CpuTimed(Direct):
    """`Direct`, timing each stage in CPU seconds of this process instead of wall seconds."""

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        start = time.process_time()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.process_time() - start


def weight_moved(a: Mapping[int, float], b: Mapping[int, float]) -> float:
    """Share of the total weight that moves between two weight vectors (0 when both are zero)."""
    total = max(sum(a.values()), sum(b.values()))
    if total <= 0:
        return 0.0
    return sum(abs(a.get(u, 0.0) - b.get(u, 0.0)) for u in set(a) | set(b)) / 2 / total


class Validator:
    """One validator's folder, audit root and in-memory state."""

    def __init__(self, cfg: GauntletConfig) -> None:
        self.cfg, self.state = cfg, restore_state(AuditStore(cfg.audit.root))
        self.timings: list[dict[str, float]] = []

    def validate(self, window: int) -> WindowResult:
        run = CpuTimed()
        result = validate_window(run, self.cfg, window, state=self.state, rerun=True)
        self.state = result.state
        self.timings.append(dict(run.seconds))
        return result


def _screened_config(cfg: GauntletConfig, name: str, settings: dict) -> GauntletConfig:
    folder = Path(cfg.validator.workdir).parent / f"screened-{name}"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "audit").mkdir(parents=True)
    return with_overrides(cfg, {"screening": {"enabled": True, **settings},
                                "validator": {"workdir": str(folder)}, "audit": {"root": str(folder / "audit")}})


def _compare(window: int, exact: WindowResult, screened: WindowResult, g: int) -> dict:
    truth = {u: s.gradient_score for u, s in exact.evaluated.scores.items()}
    ev = screened.evaluated
    common = sorted(set(truth) & set(ev.estimates) & set(ev.scores))
    est = {u: ev.estimates[u] for u in common}
    got = {u: ev.scores[u].gradient_score for u in common}
    ref = {u: truth[u] for u in common}
    out = {"window": window, "chosen": len(exact.filtered.chosen), "exact_scored": len(ev.losses),
           "screened": len(ev.screened), "weight_moved": weight_moved(exact.rated.weights, screened.rated.weights),
           "same_gather": list(exact.stepped.gather) == list(screened.stepped.gather)}
    if len(common) >= 2:
        out |= {"spearman_estimate": spearman(est, ref), "spearman_screened": spearman(got, ref),
                "topg_overlap_estimate": topg_overlap(est, ref, min(g, len(common))),
                "topg_overlap_screened": topg_overlap(got, ref, min(g, len(common)))}
    return out


def _evaluate_s(timings: dict[str, float]) -> float:
    return timings.get("evaluate", 0.0) + timings.get("baseline", 0.0)


def measure(peers: int = PEERS, mined: int = MINED, variants: Mapping[str, dict] = VARIANTS) -> dict:
    roster = default_mix(peers)
    net = init_network(WORK / f"screening-net{peers}", behaviours=roster, corpus=WORK / "data" / "corpus",
                       tokenizer=WORK / "data" / "tokenizer", force=True)
    run_network(net, mined)
    exact = Validator(net.config)
    screened = {name: Validator(_screened_config(net.config, name, s)) for name, s in variants.items()}
    windows: dict[str, list[dict]] = {name: [] for name in variants}
    g = net.config.aggregation.gather_size
    for window in range(mined - net.config.chain.validator_offset + 1):
        truth = exact.validate(window)
        for name, validator in screened.items():
            target = checkpoint_path(validator.cfg.validator.workdir, window)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(checkpoint_path(exact.cfg.validator.workdir, window), target)
            windows[name].append(_compare(window, truth, validator.validate(window), g))
    out = {"peers": peers, "roster": {b: roster.count(b) for b in dict.fromkeys(roster)}, "gather_size": g,
           "windows_validated": len(exact.timings), "exact_evaluate_s": [_evaluate_s(t) for t in exact.timings]}
    for name, validator in screened.items():
        out[name] = _variant(validator, windows[name], out["exact_evaluate_s"])
    return out


def _variant(validator: Validator, rows: list[dict], exact_s: list[float]) -> dict:
    """One screening variant over every window: speed-up, moved weight, rank agreement."""
    mine = [_evaluate_s(t) for t in validator.timings]
    out = {"settings": validator.cfg.screening.model_dump(), "windows": rows, "evaluate_s": mine,
           "speedup_per_window": [e / max(s, 1e-9) for e, s in zip(exact_s, mine)],
           "speedup": sum(exact_s) / max(sum(mine), 1e-9),
           "weight_moved_max": max(r["weight_moved"] for r in rows),
           "within_acceptance": all(r["weight_moved"] <= ACCEPT for r in rows)}
    for key in ("spearman_estimate", "spearman_screened", "topg_overlap_estimate", "topg_overlap_screened"):
        values = [r[key] for r in rows if key in r]
        out[key + "_min"] = min(values) if values else None
        out[key + "_median"] = statistics.median(values) if values else None
    return out


def summary(network: Mapping) -> dict:
    """The top-level figures of screening.json: the config's screening settings, and the lean variant."""
    d, lean = network["default"], network.get("lean")
    out = {"screening_weight_moved_max": d["weight_moved_max"], "screening_within_1pct": d["within_acceptance"],
           "screening_network_speedup": d["speedup"], "screening_network_spearman_min": d["spearman_estimate_min"],
           "screening_network_topg_overlap_min": d["topg_overlap_estimate_min"],
           "screening_network_exact_share": sum(w["exact_scored"] for w in d["windows"])
           / sum(w["chosen"] for w in d["windows"])}
    if lean:
        out |= {"screening_lean_weight_moved_max": lean["weight_moved_max"], "screening_lean_speedup": lean["speedup"]}
    return out


def main() -> dict:
    torch.set_num_threads(1)
    started = time.process_time()
    network = measure()
    figures = summary(network) | {"screening_network": network | {"seconds": time.process_time() - started}}
    merged = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(merged | figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
