"""Scoring's peak memory does not grow with the number of peers (one dense delta at a time)."""

from __future__ import annotations

import os

import pytest

from benchmarks.bench_scoring import peak_memory_growth

pytestmark = pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK),
                                reason="needs Linux's /proc/self/clear_refs to reset the peak resident set")


def test_peak_memory_does_not_grow_with_the_peers_on_the_small_model():
    lazy = peak_memory_growth("small")
    assert lazy["growth_per_peer_in_deltas"] < 0.1, lazy
    # the control: holding every peer's delta alive is seen as about one delta a peer
    held = peak_memory_growth("small", keep=True)
    assert held["growth_per_peer_in_deltas"] > 0.8, held
