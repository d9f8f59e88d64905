"""The scoring benchmark's measurements: peak memory per peer, and the GPU run (on the CPU here)."""

from __future__ import annotations

import os

import pytest

from benchmarks.bench_scoring import peak_memory_growth
from benchmarks.scoring_gpu import measure

needs_clear_refs = pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK),
                                      reason="needs Linux's /proc/self/clear_refs to reset the peak resident set")


@needs_clear_refs
def test_peak_memory_does_not_grow_with_the_peers_on_the_small_model():
    lazy = peak_memory_growth("small")
    assert lazy["growth_per_peer_in_deltas"] < 0.1, lazy
    # the control: holding every peer's delta alive is seen as about one delta a peer
    held = peak_memory_growth("small", keep=True)
    assert held["growth_per_peer_in_deltas"] > 0.8, held


def test_the_gpu_measurement_runs_its_path_on_the_cpu():
    got = measure("tiny", 256, "cpu", peers=2, peak_flops=1e12,
                  overrides={"data": {"seq_len": 64, "batch_size": 2, "rows_per_page": 2}})
    assert got["peers"] == 2 and got["seconds"] > 0
    assert 0 < got["gpu_mfu"] < 1 and got["gpu_peers_per_window"] >= 1


@pytest.mark.gpu
def test_scoring_the_1_2b_model_on_a_gpu():
    got = measure(peers=2)
    assert 0 < got["gpu_mfu"] < 1, got
