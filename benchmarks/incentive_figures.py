"""The issue-10 figures from the incentive benchmark's runs (see bench_incentive.py), and its chart.

Every figure is computed per run and then averaged over seeds (worst-case figures: the worst
over seeds). Keys without a suffix are the `default` preset; `*_paper` the paper preset.

- honest_weight_share(_worst): per window after warm-up, the weight of the manifest's
  `honest_work` uids over all weight paid (mean; worst window);
- windows_to_exclude_max: per hostile peer, the windows until its weight stays under 1 % for the
  rest of the run (null when one never does; `hostile_never_excluded` counts those);
- honest_zeroed_after_warmup: honest-work peers paid 0 in at least one window after warm-up;
- honest_pay_cv: std / mean of cumulative pay among the equal-work `honest` peers;
- pay_monotone_spearman: Spearman between work (lazy 0.5, honest 1, diligent 2) and pay;
- own_test_false_negative / _positive: honest-work evaluations with b = -1 / data cheats'
  (data_ignorer, replayer, copycats) evaluations with b = +1, from the audit `scores` table;
  own_test_roc: both rates for b recomputed at other margins from the recorded r_own and s;
- loss_ratio_<rule>: held-out loss of the rule's shadow model over the honest-only shadow's
  (shadow.py); loss_ratio_gauntlet: the network's own model over the same reference.
"""

from __future__ import annotations

import contextlib
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from benchmarks.bench_incentive import DATA_CHEATS, MARGINS, WORK
from benchmarks.aggregators import RULES
from gauntlet.config import load_config
from gauntlet.screening import mean_ranks

EXCLUDED = 0.01


def normalise(run: dict) -> dict:
    """Integer uid and window keys again (JSON turns them into strings)."""
    return {**run, "behaviour": {int(u): b for u, b in run["behaviour"].items()},
            "weights": {int(w): {int(u): float(x) for u, x in ws.items()} for w, ws in run["weights"].items()}}


def _windows(run: dict) -> list[int]:
    return sorted(int(w) for w in run["weights"])


def _w(run: dict, window: int, uid: int) -> float:
    return run["weights"][window].get(uid, 0.0)


def honest_shares(run: dict, warmup: int) -> list[float]:
    out = []
    for w in _windows(run)[warmup:]:
        total = sum(_w(run, w, int(u)) for u in run["behaviour"])
        out.append(sum(_w(run, w, u) for u in run["honest_work"]) / total if total > 0 else 0.0)
    return out


def windows_to_exclude(run: dict) -> dict[int, int | None]:
    """Per hostile uid: windows until its weight stays under 1 % (None: never within the run)."""
    windows = _windows(run)
    out: dict[int, int | None] = {}
    for uid in (int(u) for u in run["behaviour"]):
        if uid in run["honest_work"]:
            continue
        above = [i for i, w in enumerate(windows) if _w(run, w, uid) >= EXCLUDED]
        out[uid] = 0 if not above else (above[-1] + 1 if above[-1] + 1 < len(windows) else None)
    return out


def pay(run: dict) -> dict[int, float]:
    return {int(u): sum(_w(run, w, int(u)) for w in _windows(run)) for u in run["behaviour"]}


def _uids(run: dict, *names: str) -> list[int]:
    return [int(u) for u, b in run["behaviour"].items() if b in names]


def spearman(x: list[float], y: list[float]) -> float:
    """Rank correlation (ties share their mean rank); 0.0 when either side is constant."""
    rx, ry = mean_ranks(x), mean_ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    den = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return cov / den if den > 0 else 0.0


def first_windows(rows: list[dict], uids: set[int]) -> dict[int, int]:
    """uid -> the first window an evaluation row of it has, for `uids` (a replayer's first upload
    is its honest work: the own-data figures leave that evaluation out)."""
    first: dict[int, int] = {}
    for r in rows:
        if r["uid"] in uids:
            first[r["uid"]] = min(first.get(r["uid"], r["window"]), r["window"])
    return first


def own_test(run: dict, margin: float | None = None) -> tuple[float | None, float | None]:
    """(false negative: honest-work peers with b = -1, false positive: data cheats with b = +1).

    A replayer's first evaluation counts as neither (as in bench_own_test): that update is its
    honest work on its own pages of that window, so +1 there is right."""
    honest = set(_uids(run, "honest", "lazy", "diligent", "scaled"))
    cheats = set(_uids(run, *DATA_CHEATS))
    rows = [r for r in run["scores"] if r["s"] is not None and r["r_own"] is not None]
    first = first_windows(rows, set(_uids(run, "replayer")))
    rows = [r for r in rows if first.get(r["uid"]) != r["window"]]

    def b(r: dict) -> int:
        return int(r["b"]) if margin is None else (1 if r["r_own"] > r["s"] + margin * abs(r["s"]) else -1)

    hb = [b(r) for r in rows if r["uid"] in honest]
    cb = [b(r) for r in rows if r["uid"] in cheats]
    return (sum(x < 0 for x in hb) / len(hb) if hb else None, sum(x > 0 for x in cb) / len(cb) if cb else None)


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.fmean(values), 4) if values else None


def preset_figures(runs: list[dict], warmup: int) -> dict:
    out: dict = {}
    shares = [honest_shares(r, warmup) for r in runs]
    out["honest_weight_share"] = _mean([statistics.fmean(s) for s in shares if s])
    out["honest_weight_share_worst"] = min((min(s) for s in shares if s), default=None)
    excl = [windows_to_exclude(r) for r in runs]
    never = [v for e in excl for v in e.values() if v is None]
    out["windows_to_exclude_max"] = None if never else max((v for e in excl for v in e.values()), default=0)
    out["hostile_never_excluded"] = len(never)
    by_kind: dict[str, list] = defaultdict(list)
    for run, e in zip(runs, excl):
        for uid, v in e.items():
            by_kind[run["behaviour"][uid]].append(v)
    out["windows_to_exclude_by_behaviour"] = {k: v for k, v in sorted(by_kind.items())}
    zeroed = 0
    for run in runs:
        for uid in run["honest_work"]:
            zeroed += any(_w(run, w, uid) == 0.0 for w in _windows(run)[warmup:])
    out["honest_zeroed_after_warmup"] = zeroed
    cvs, rhos = [], []
    for run in runs:
        p = pay(run)
        equal = [p[u] for u in _uids(run, "honest")]
        cvs.append(statistics.pstdev(equal) / statistics.fmean(equal) if statistics.fmean(equal) > 0 else None)
        work = [(WORK[b], p[int(u)]) for u, b in run["behaviour"].items() if b in WORK]
        rhos.append(spearman([a for a, _ in work], [b for _, b in work]))
        out.setdefault("pay_by_behaviour", {})
        for b in (b for b in ("lazy", "honest", "diligent", "scaled") if _uids(run, b)):
            out["pay_by_behaviour"].setdefault(b, []).append(round(statistics.fmean(p[u] for u in _uids(run, b)), 4))
    out["honest_pay_cv"] = _mean(cvs)
    out["pay_monotone_spearman"] = _mean(rhos)
    tests = [own_test(r) for r in runs]
    out["own_test_false_negative"] = _mean([t[0] for t in tests])
    out["own_test_false_positive"] = _mean([t[1] for t in tests])
    out["own_test_margin_meeting_goals"] = next(
        (m for m in MARGINS if all(own_test(r, m)[0] is not None and own_test(r, m)[0] <= 0.02
                                   and (own_test(r, m)[1] or 0.0) <= 0.05 for r in runs)), None)
    out["own_test_roc"] = [{"margin": m, "fn": _mean([own_test(r, m)[0] for r in runs]),
                            "fp": _mean([own_test(r, m)[1] for r in runs])} for m in MARGINS]
    ratios: dict[str, list] = defaultdict(list)
    for run in runs:
        loss = run["loss"]
        for name in [*RULES, "gauntlet"]:
            ratios[name].append(loss[name] / loss["honest_only"])
    out.update({f"loss_ratio_{k}": _mean(v) for k, v in ratios.items()})
    out["loss_measured_after_windows"] = min(int(r["loss"].get("windows", len(r["weights"]))) for r in runs)
    out["loss_honest_only"] = _mean([r["loss"]["honest_only"] for r in runs])
    out["loss_initial"] = _mean([r["loss"]["initial"] for r in runs])
    out["rule_f_used"] = {k: runs[0]["loss"].get(f"f_{k}") for k in RULES}
    out["seconds_per_window"] = _mean([statistics.fmean(r["seconds_validate"]) + statistics.fmean(r["seconds_miners"])
                                       for r in runs])
    return out


def smoothed(run: dict, alpha: float) -> dict:
    """What-if: pay each window from an EMA of the recorded weights (alpha = weight of the past),
    renormalised; a proxy for "pay from a smoothed score" computed without re-running."""
    ema: dict[int, float] = {}
    weights = {}
    for w in _windows(run):
        ema = {u: alpha * ema.get(u, 0.0) + (1 - alpha) * _w(run, w, u) for u in run["behaviour"]}
        total = sum(ema.values())
        weights[w] = {u: x / total if total > 0 else 0.0 for u, x in ema.items()}
    return {**run, "weights": weights}


def repowered(run: dict, power: float, recorded: float) -> dict:
    """What-if, exact: the weights under `weights.power = power` from those recorded under
    `recorded` (w = F^p / sum F^p, so F^q / sum F^q = w^(q/p) / sum w^(q/p)); the gather list,
    a top-G by the same order, and so the run itself, are unchanged."""
    weights = {}
    for w in _windows(run):
        powered = {u: x ** (power / recorded) if x > 0 else 0.0 for u, x in run["weights"][w].items()}
        total = sum(powered.values())
        weights[w] = {u: x / total if total > 0 else 0.0 for u, x in powered.items()}
    return {**run, "weights": weights}


def rerated(run: dict, overrides: list[str], own: Callable[[int, int], float] | None = None) -> dict:
    """What-if: the weights the run's own recorded scores (s, r_own, b) earn under its preset with
    `overrides` (e.g. the paper's `weights.own_data=scale`). Exact for the rating path when every
    evaluated peer was in sync and accepted (this benchmark's honest-work peers are); the gather
    list, and so the later scores, are not re-run. `own(uid, window)`, when given, replaces the
    own-data factor of a window's score (B, or B > 0 under the gate) for a rule the validator has
    no setting for (see `accumulated_evidence`)."""
    from unittest import mock

    from gauntlet import ratings
    from gauntlet.config import with_overrides
    from gauntlet.ratings import PeerScore, ValidatorState, WindowOutcome, advance
    from gauntlet.verdicts import Verdict
    from gauntlet.weights import compute_weights

    ran = [f"weights.{k}={run[k]}" for k in ("power", "own_data", "score_ema") if run.get(k) is not None]
    ran += [f"rating.anchor={run['anchor']}"] if run.get("anchor") is not None else []
    cfg = with_overrides(load_config(preset=run["preset"]), [*ran, *overrides])  # the run's own settings first
    by_window: dict[int, dict[int, PeerScore]] = defaultdict(dict)
    for r in run["scores"]:
        if r["s"] is not None:
            by_window[int(r["window"])][int(r["uid"])] = PeerScore(r["s"], r["r_own"], r["b"])
    def own_factor(peer, window, cfg, fired, offset=0.0):  # ratings._window_score with `own` for B
        return (peer.ordinal - offset) * own(peer.uid, window) * peer.sync_score

    state, weights = ValidatorState(), {}
    with mock.patch.object(ratings, "_window_score", own_factor) if own else contextlib.nullcontext():
        for w in _windows(run):
            scores = by_window.get(w, {})
            outcome = WindowOutcome(w, {u: Verdict.accept(u) for u in scores}, scores, {u: 1.0 for u in scores})
            state, records = advance(state, outcome, cfg)
            paid = compute_weights({r.state.uid: r.state.final_score for r in records}, cfg)
            weights[w] = {u: paid.get(u, 0.0) for u in (int(x) for x in run["behaviour"])}
    return {**run, "weights": weights}


EVIDENCE_CLIP = 3.0
"""`accumulated_evidence`: one window's statistic counts at most this many standard errors."""


def accumulated_evidence(run: dict, ema: float, z: float) -> Callable[[int, int], float] | None:
    """What-if own-data factor: 1 while a peer's own-data evidence accumulated over windows is
    above `z`, else 0 (None when the run has no sequential-test statistics).

    Each evaluation's statistic t = d / se (the sequential test's difference over its standard
    error, clipped to +-EVIDENCE_CLIP) is summed with weight `ema` per window of age and divided by
    the root of the summed squared weights, so that with no own-data effect the sum stays about
    N(0, 1) (a weighted Stouffer sum). A peer whose own-data edge is real but too small to decide in
    one window (the diligent peer: half its update is from pages beyond its own) gathers evidence
    over windows instead of being left undecided (b = 0) in each one."""
    rows = sorted((r for r in run["scores"] if r.get("se") is not None and r.get("d") is not None),
                  key=lambda r: r["window"])
    if not rows:
        return None
    total: dict[int, float] = {}
    weight: dict[int, float] = {}
    z_at: dict[int, dict[int, float]] = defaultdict(dict)
    for r in rows:
        u = int(r["uid"])
        t = r["d"] / r["se"] if r["se"] > 0 else (EVIDENCE_CLIP if r["d"] > 0 else -EVIDENCE_CLIP)
        t = max(-EVIDENCE_CLIP, min(EVIDENCE_CLIP, t))
        total[u] = ema * total.get(u, 0.0) + t
        weight[u] = ema * ema * weight.get(u, 0.0) + 1.0
        z_at[u][int(r["window"])] = total[u] / weight[u] ** 0.5

    def factor(uid: int, window: int) -> float:
        seen = [w for w in z_at.get(uid, {}) if w <= window]
        return 1.0 if seen and z_at[uid][max(seen)] > z else 0.0
    return factor


def whatif_figures(runs: list[dict], warmup: int, tag: str, change) -> dict:
    part = preset_figures([change(r) for r in runs], warmup)
    keys = ("honest_weight_share", "honest_weight_share_worst", "windows_to_exclude_max",
            "honest_zeroed_after_warmup", "honest_pay_cv", "pay_monotone_spearman")
    return {f"whatif_{tag}_{k}": part[k] for k in keys}


def figures(runs: list[dict], warmup: int) -> dict:
    out: dict = {"warmup_windows": warmup}
    runs = [normalise(r) for r in runs]
    for preset in sorted({r["preset"] for r in runs}):
        suffix = "" if preset == "default" else f"_{preset}"
        part = preset_figures([r for r in runs if r["preset"] == preset], warmup)
        out.update({f"{k}{suffix}": v for k, v in part.items()})
        if preset == "default":
            group = [r for r in runs if r["preset"] == preset]
            p = float(group[0].get("power", 2.0))
            for alpha in (0.5, 0.8):
                out.update(whatif_figures(group, warmup, f"ema{alpha}", lambda r, a=alpha: smoothed(r, a)))
            # The same scores under the alternatives of weights.own_data and score_ema (exact for pay).
            for tag, change in (("noema", ["weights.score_ema=0"]), ("gate", ["weights.own_data=gate"]),
                                ("noanchor", ["rating.anchor=0"])):
                out.update(whatif_figures(group, warmup, tag, lambda r, c=change: rerated(r, c)))
            # B replaced by own-data evidence accumulated over windows (at the preset's
            # uniqueness.ema, a gate at its own_z), where the runs recorded the sequential test.
            uq = load_config(preset=preset).uniqueness
            if all(accumulated_evidence(r, uq.ema, uq.own_z) for r in group):
                out.update(whatif_figures(group, warmup, "evidence", lambda r: rerated(
                    r, [], own=accumulated_evidence(r, uq.ema, uq.own_z))))
            for q in (1.0, 0.5):
                out.update(whatif_figures(group, warmup, f"power{q}", lambda r, q=q: repowered(r, q, p)))
                out.update(whatif_figures(group, warmup, f"power{q}_ema0.5",
                                          lambda r, q=q: smoothed(repowered(r, q, p), 0.5)))
    return out


def chart(runs: list[dict], path: Path) -> None:
    """Weight per behaviour over windows (summed over its peers, mean over seeds), one panel a preset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [normalise(r) for r in runs]
    presets = sorted({r["preset"] for r in runs})
    fig, axes = plt.subplots(1, len(presets), figsize=(7 * len(presets), 4.5), squeeze=False)
    for ax, preset in zip(axes[0], presets):
        group = [r for r in runs if r["preset"] == preset]
        kinds = sorted({b for r in group for b in r["behaviour"].values()})
        steps = min(len(r["weights"]) for r in group)  # seeds start at different windows: count from each start
        for kind in kinds:
            series = [statistics.fmean(statistics.fmean(_w(r, _windows(r)[i], u) for u, b in r["behaviour"].items()
                                                        if b == kind) for r in group) for i in range(steps)]
            ax.plot(range(steps), series, label=kind, linestyle="-" if kind in WORK or kind == "scaled" else "--")
        ax.set_title(f"preset {preset}: weight per behaviour")
        ax.set_xlabel("window (from the network's first)")
        ax.set_ylabel("weight per peer (mean over the behaviour's peers)")
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
