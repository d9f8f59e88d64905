"""The screening benchmark's measure of moved weight (the issue's 1% acceptance rests on it)."""

from __future__ import annotations

import pytest

from benchmarks.bench_screening import weight_moved


def test_weight_moved_is_the_share_of_total_weight_that_changes_hands():
    assert weight_moved({1: 0.5, 2: 0.5}, {1: 0.5, 2: 0.5}) == 0.0
    assert weight_moved({1: 1.0}, {2: 1.0}) == 1.0
    assert weight_moved({1: 0.6, 2: 0.4}, {1: 0.5, 2: 0.5}) == pytest.approx(0.1)
    assert weight_moved({1: 0.6, 2: 0.4, 3: 0.0}, {1: 0.6, 2: 0.39, 3: 0.01}) == pytest.approx(0.01)
    assert weight_moved({1: 0.0}, {1: 0.0}) == 0.0  # nobody paid on either side: nothing moved
