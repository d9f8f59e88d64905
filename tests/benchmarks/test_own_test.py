"""The own-data test benchmark's figures, from constructed per-batch records (no network run)."""

from __future__ import annotations

import pytest

from benchmarks.bench_own_test import SEQUENTIAL, figures, sequential_b

BEHAVIOUR = {1: "honest", 2: "data_ignorer", 3: "replayer"}


def _row(window: int, uid: int, own: list[float], extra: list[float], s: float = 1.0) -> dict:
    rand = [s * 0.9, s, s * 1.1]
    r_own = sum(own) / len(own)
    return {"window": window, "uid": uid, "s": s, "r_own": r_own, "own": own, "extra": extra, "rand": rand}


ROWS = [
    _row(0, 1, [2.0, 2.1], [2.0] * 4),          # honest, clear: +1 under both rules
    _row(1, 1, [1.1, 1.15], [1.9, 2.1, 2.0, 2.2]),  # honest, unlucky sample: margin -1, sequential draws -> +1
    _row(0, 3, [2.0, 2.2], [2.1] * 4),          # replayer's first window: honest work, counted in neither class
    _row(1, 3, [1.25, 1.3], [0.9, 1.0, 0.95, 1.0]),  # replayer later: margin +1 (1.27 > 1.2), sequential -1
    _row(1, 2, [0.7, 0.8], [0.8] * 4),          # data ignorer: -1 under both
]


def test_figures_compare_both_rules_on_the_same_records():
    out = figures(BEHAVIOUR, ROWS)
    assert out["evaluations_honest_work"] == 2 and out["evaluations_data_cheats"] == 2
    assert out["own_test_margin_fn"] == 0.5 and out["own_test_margin_fp"] == 0.5
    assert out["own_test_sequential_fn"] == 0.0 and out["own_test_sequential_fp"] == 0.0
    assert out["own_test_sequential_mean_b_cheats"] == -0.5  # the ignorer -1; the replayer undecided, leaning for: 0
    assert out["own_test_extra_batches"] > 0 and 0 <= out["own_test_undecided_share"] <= 1
    assert len(out["grid"]) == 54 and all(g["honest_n"] == 2 for g in out["grid"])


def test_sequential_b_draws_the_recorded_extra_batches_in_order():
    b, used = sequential_b(ROWS[1], SEQUENTIAL)
    assert b == 1 and 2 < used <= 6
    assert sequential_b(ROWS[1], SEQUENTIAL) == (b, used)
    b, used = sequential_b(ROWS[0], SEQUENTIAL)
    assert (b, used) == (1, 2)  # decided on the sampled batches: nothing drawn


@pytest.mark.parametrize("row", ROWS)
def test_margin_and_sequential_indicators_are_in_range(row):
    assert sequential_b(row, SEQUENTIAL)[0] in (-1, 0, 1)


def test_the_benchmarked_knobs_are_the_default_presets():
    from gauntlet.config import load_config

    uq = load_config(preset="default").uniqueness
    assert uq.own_test == "sequential"
    assert SEQUENTIAL == {"margin": uq.own_margin, "z": uq.own_z, "sd_floor": uq.own_sd_floor,
                          "max_batches": uq.own_max_batches, "undecided": uq.own_undecided}
