"""The cost model against values computed by hand for a small shape."""

from __future__ import annotations

import pytest

from gauntlet.config import load_config
from gauntlet.costmodel import (ScoringCost, exact_peers, forward_flops_per_token, gpus_needed, loader_batches,
                                matmul_params, peers_per_window, sampled_tokens, scoring_floor, total_params,
                                window_seconds)

# hidden 8, 2 layers, 2 heads of 4, 1 kv head, MLP 16, vocab 10.
SHAPE = dict(hidden_size=8, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
             intermediate_size=16)


def _cfg(**scoring):
    return load_config(overrides={
        "model": {"size": "tiny"},
        "data": {"seq_len": 16, "batch_size": 2, "rows_per_page": 10, "pages_per_window": 3},
        "scoring": {"sample_rate": 0.5, "random_pages": 2, **scoring},
        "aggregation": {"gather_size": 3, "min_peers": 1},
        "screening": {"margin": 1, "max_near": 1, "audit_peers": 1},
    })


def test_matmul_params_by_hand():
    # per layer: q, o 8*8 each = 128; k, v 8*(1*4) each = 64; MLP 3*8*16 = 384 -> 576; x2 = 1152; head 80
    assert matmul_params(SHAPE, vocab=10) == 1232
    assert total_params(SHAPE, vocab=10) == 1232 + 80 + 5 * 8  # embedding, 2 norms a layer + final


def test_forward_flops_per_token_by_hand():
    # 2 * 1232 + 2 layers * 4 * 32 * 8
    assert forward_flops_per_token(SHAPE, vocab=10, seq_len=32) == 2464 + 2048


def test_paper_size_is_about_1_2b():
    assert total_params("paper-1.2b", 32000) == pytest.approx(1.21e9, rel=0.01)


def test_tokens_per_loader_follow_the_data_path():
    cfg = _cfg()
    # a page: 10 rows * 5 tokens / 16 = 3 sequences; 3 pages = 9 sequences = 5 batches of 2
    assert loader_batches(cfg, 3, tokens_per_row=5) == 5
    assert sampled_tokens(cfg, 3, tokens_per_row=5) == 2 * 2 * 16  # floor(0.5 * 5) = 2 batches
    # random: 2 pages = 6 sequences = 3 batches -> 1 batch
    assert sampled_tokens(cfg, 2, tokens_per_row=5) == 1 * 2 * 16
    with pytest.raises(ValueError, match="no sequence"):
        loader_batches(cfg, 1, tokens_per_row=1)


def test_scoring_floor_of_a_window_by_hand():
    cfg = _cfg()
    cost = ScoringCost.of(cfg, vocab=10, tokens_per_row=5)
    fpt = forward_flops_per_token("tiny", 10, 16)
    decode = 4 * cfg.codec.chunk * cost.params
    assert cost.peer_flops() == fpt * (2 * 64 + 32) + decode
    want = (fpt * 32 + 3 * cost.peer_flops()) / 1e9  # random before once, then 3 peers
    assert scoring_floor(cfg, 3, 1e9, vocab=10, tokens_per_row=5) == pytest.approx(want)
    per_peer = _cfg(shared_random_batches=False)
    assert ScoringCost.of(per_peer, 10, 5).peer_flops() == fpt * (2 * 64 + 2 * 32) + decode


def test_peers_per_window_and_gpus_are_consistent():
    cfg = _cfg()
    kw = dict(vocab=10, tokens_per_row=5)
    one = window_seconds(cfg, 1, 1e9, **kw)
    n = peers_per_window(cfg, 10 * one, 1e9, 1.0, **kw)
    assert window_seconds(cfg, n, 1e9, **kw) <= 10 * one < window_seconds(cfg, n + 1, 1e9, **kw)
    devices = gpus_needed(cfg, 4 * n, 1e9, 1.0, window_s=10 * one, **kw)
    assert devices == 4  # the shared forward is paid on each device
    assert gpus_needed(cfg, 5, 1e9, 1.0, window_s=one / 1000, **kw) is None


def test_screening_caps_the_exact_peers():
    cfg = _cfg()
    assert exact_peers(cfg, 100) == 3 + 1 + 1 + 1 and exact_peers(cfg, 4) == 4
    kw = dict(vocab=10, tokens_per_row=5)
    exact = window_seconds(cfg, 100, 1e9, **kw)
    screened = window_seconds(cfg, 100, 1e9, screening=True, **kw)
    assert screened < exact
    with pytest.raises(ValueError, match="shared_random_batches"):
        window_seconds(_cfg(shared_random_batches=False), 10, 1e9, screening=True, **kw)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="unknown model size"):
        forward_flops_per_token("huge", 10, 16)
    with pytest.raises(ValueError, match="mfu"):
        peers_per_window(_cfg(), 96, 1e9, 0.0, vocab=10, tokens_per_row=5)
