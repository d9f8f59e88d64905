"""The per-attack loss benchmark's figures, on constructed records: what is compared with what."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_attacks
from benchmarks.bench_attacks import ATTACKS, FULL, NONE, QUICK, arguments, combine, figures, gathered, roster
from benchmarks.run import collect, flat


def _run(attack: str, gauntlet: float, best: dict[str, float], init_seed: int = 0, honest: float = 8.0) -> dict:
    """A run whose losses are `honest` times the given ratios (1.05 for any rule not named)."""
    ratios = {"mean": 0.9, "median": 1.05, "trimmed_mean": 1.05, "krum": 1.05, "multi_krum": 1.05,
              "centered_clipping": 1.05, "bulyan": 1.05, **best, "gauntlet": gauntlet}
    loss = {k: v * honest for k, v in ratios.items()} | {"honest_only": honest, "initial": 9.0, "f_krum": 2}
    return {"attack": attack, "init_seed": init_seed, "windows": 3, "stepped": 3, "loss": loss, "seconds": 10.0}


def _runs() -> list[dict]:
    return [_run("alie", 1.02, {"multi_krum": 1.01}), _run("ipm", 0.98, {"bulyan": 1.0, "median": 1.03}),
            _run(NONE, 1.0, {}, 0), _run(NONE, 1.01, {"krum": 1.08}, 1, honest=7.0)]


def test_gap_is_gauntlet_minus_the_best_robust_rule_never_the_mean() -> None:
    got = figures(_runs())
    assert got["attack_best_rule_alie"] == "multi_krum"  # the mean's 0.9 is not a robust rule
    assert got["attack_loss_ratio_best_alie"] == pytest.approx(1.01)
    assert got["attack_loss_ratio_gauntlet_alie"] == pytest.approx(1.02)
    assert got["attack_gauntlet_gap_alie"] == pytest.approx(0.01)
    assert got["attack_best_rule_ipm"] == "bulyan" and got["attack_gauntlet_gap_ipm"] == pytest.approx(-0.02)
    assert got["attack_gauntlet_gap_worst"] == pytest.approx(0.01) and got["attack_worst"] == "alie"
    assert got["attack_loss_ratios_alie"]["mean"] == pytest.approx(0.9)
    assert got["attack_gauntlet_aggregated_mean_alie"] is None  # these records hold no aggregated sets


def test_gathered_counts_files_averaged_and_the_attackers_among_them() -> None:
    run = _run("ipm", 1.0, {}) | {"attackers": [5, 6], "aggregated": [[], [0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 5]]}
    assert gathered(run) == (5.5, 0.2727)  # the window without a step is left out; 3 of 11 files
    assert figures([run])["attack_attacker_share_aggregated_ipm"] == 0.2727
    assert gathered(_run("ipm", 1.0, {})) == (None, None)


def test_noise_is_the_change_of_a_ratio_between_the_honest_only_seeds() -> None:
    got = figures(_runs())
    # seed 1 moved gauntlet by 0.01 and krum by 0.03; the other five robust rules not at all
    assert got["attack_loss_noise"] == pytest.approx((0.01 + 0.03) / 7, abs=1e-4)
    assert got["attack_loss_noise_max"] == pytest.approx(0.03)
    assert got["attack_gap_over_noise"] == ["alie"]  # 0.01 > 0.0057; ipm's gap is negative
    no_noise = figures(_runs()[:3])  # one honest-only network: no second seed, no noise figure
    assert no_noise["attack_loss_noise"] is None and no_noise["attack_gap_over_noise"] is None


def test_combine_writes_flat_figures_and_the_runs_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_attacks, "RESULTS", tmp_path / "attacks.json")
    out = combine(_runs(), quick=False, seconds=42.0)
    assert json.loads((tmp_path / "attacks.json").read_text()) == out
    assert len(json.loads((tmp_path / "attacks_runs.json").read_text())) == 4
    headline = flat(collect(tmp_path))  # what benchmarks.run puts in results.json
    assert headline["attack_gauntlet_gap_worst"] == pytest.approx(0.01) and "attack_loss_noise" in headline
    assert "attack_best_rule_alie" not in headline and out["attack_seconds_total"] == 42.0


def test_rosters_and_bad_input() -> None:
    assert roster("ipm") == ["honest"] * 5 + ["ipm"] * 2 and roster(NONE) == ["honest"] * 7
    with pytest.raises(ValueError, match="unknown attack 'sybil'"):
        roster("sybil")
    with pytest.raises(ValueError, match="no honest-only loss"):
        figures([{"attack": "alie", "loss": {"gauntlet": 8.0}}])
    assert arguments(QUICK, "d") == [("alie", 0, 2, "d")]  # CI smoke: one attack, 2 windows, no noise


def test_full_mode_runs_every_attack_and_two_noise_networks_on_other_data() -> None:
    args = arguments(FULL, "d")
    assert [a[0] for a in args] == [*ATTACKS, NONE, NONE] and {a[2] for a in args} == {FULL["windows"]}
    first, second = args[-2:]
    assert first[1] != second[1] and first[4] == 0 < second[4]  # other init seed, other pages


def test_honest_pay_counts_zero_weights_and_the_spread_after_the_first_gather_list() -> None:
    early = [{"1": 0.5, "2": 0.5, "3": 0.0}] * bench_attacks.PAY_FROM  # not counted
    late = [{"1": 0.6, "2": 0.4, "3": 0.0}, {"1": 0.2, "2": 0.0, "3": 0.8}]
    run = _run(NONE, 1.0, {}) | {"honest": [1, 2, 3], "weights": early + late}
    zeroed, cv = bench_attacks.honest_pay(run)
    assert zeroed == pytest.approx(2 / 6, abs=1e-4)  # uid 3 in the first late window, uid 2 in the second
    totals = [0.8, 0.4, 0.8]
    mean = sum(totals) / 3
    assert cv == pytest.approx((sum((t - mean) ** 2 for t in totals) / 3) ** 0.5 / mean, abs=1e-4)
    assert bench_attacks.honest_pay(_run(NONE, 1.0, {})) == (None, None)  # no weights recorded
    got = figures([_run("alie", 1.0, {}) | {"honest": [1, 2, 3], "weights": early + late}, run,
                   _run(NONE, 1.0, {}, 1) | {"honest": [1, 2, 3], "weights": early + late[:1]}])
    assert got["attack_honest_zeroed_share_alie"] == pytest.approx(0.3333)
    assert got["attack_honest_zeroed_share_honest_only"] == pytest.approx((0.3333 + 0.3333) / 2, abs=1e-4)
