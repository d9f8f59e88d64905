"""Screening: the first-order estimate against exact scoring, and the choice of exact peers."""

from __future__ import annotations

import pytest
import torch

from gauntlet.config import load_config
from gauntlet.model import build_model
from gauntlet.scoring import LossEvaluator, score_peers
from gauntlet.screening import (calibrated, choose_exact, estimate_scores, first_order_score, near_cutoff,
                                random_gradient, spearman, topg_overlap)

VOCAB = 256


def _batches(seed: int, n: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (2, 16), generator=g) for _ in range(n)]


def _cfg(**screening):
    return load_config(overrides={"aggregation": {"gather_size": 3, "min_peers": 1},
                                  "screening": {"margin": 1, "max_near": 2, "audit_peers": 2, **screening}})


def test_random_gradient_is_the_token_weighted_mean_loss_and_its_gradient():
    model = build_model("tiny", VOCAB, seed=3)
    batches = _batches(1, 3)
    before = {n: p.clone() for n, p in model.named_parameters()}
    rand = random_gradient(model, batches)
    evaluator = LossEvaluator(model)
    assert rand.loss == pytest.approx(evaluator.mean_loss(evaluator.theta, batches).item(), rel=1e-6)
    whole = torch.cat(batches)  # equal batches: the mean over all tokens is one batch's mean loss
    loss = model(input_ids=whole, labels=whole).loss
    want = torch.autograd.grad(loss, list(model.parameters()))
    for (name, p), g in zip(model.named_parameters(), want):
        assert torch.allclose(rand.grad[name], g, rtol=1e-4, atol=1e-7), name
        assert torch.equal(p, before[name]) and p.grad is None  # the live model is untouched


def test_first_order_estimate_tracks_exact_scores_for_a_small_step():
    model = build_model("tiny", VOCAB, seed=3)
    rand_batches = _batches(9, 2)
    rand = random_gradient(model, rand_batches)
    g = torch.Generator().manual_seed(5)
    # peers along the descent direction, against it and at random, mixed in proportions
    deltas = {}
    for uid, along in enumerate([1.0, 0.6, 0.2, 0.0, -0.3, -1.0]):
        deltas[uid] = {n: along * t + 0.5 * torch.randn(t.shape, generator=g) * t.abs().mean()
                       for n, t in rand.grad.items()}
    eta = 2e-5  # s about 0.5%: the first order is then within a few per cent
    est = estimate_scores(model, rand_batches, deltas, eta, rand)
    exact = score_peers(LossEvaluator(model), deltas, {u: rand_batches for u in deltas}, rand_batches, eta)
    for uid in deltas:
        assert est[uid] == pytest.approx(exact[uid].gradient_score, rel=0.05, abs=1e-6), uid
    assert sorted(deltas, key=est.get) == sorted(deltas, key=lambda u: exact[u].gradient_score)
    assert est[0] > 0 > est[5]


def test_first_order_score_names_a_missing_tensor():
    model = build_model("tiny", VOCAB, seed=3)
    rand = random_gradient(model, _batches(1, 1))
    with pytest.raises(ValueError, match="delta lacks"):
        first_order_score(rand, {}, 1e-3)


def test_choose_exact_takes_the_candidates_the_near_cutoff_and_a_seeded_audit():
    est = {10: 0.9, 11: 0.8, 12: 0.7, 13: 0.6, 14: 0.5, 15: 0.49, 16: 0.2, 17: 0.1, 18: 0.05, 19: -0.5}
    cfg = _cfg()
    chosen = choose_exact(est, cfg, seed=7)
    assert {10, 11, 12, 13} <= set(chosen)  # gather 3 + margin 1
    # cutoff 0.7 (rank 2), median |est| 0.5, band 0.25 -> within 0.125: 0.8 and 0.6 (0.6 a hair closer)
    assert near_cutoff(est, 2, 0.25, 2, exclude=set()) == [12, 13]
    assert near_cutoff(est, 2, 0.25, 5, exclude=set()) == [12, 13, 11]
    assert near_cutoff(est, 2, 0.25, 2, exclude={10, 11, 12, 13}) == []
    assert near_cutoff(est, 2, 0.5, 2, exclude={10, 11, 12, 13}) == [14, 15]
    audited = set(chosen) - {10, 11, 12, 13}
    assert len(audited) == 2 and audited <= {14, 15, 16, 17, 18, 19}
    assert choose_exact(est, cfg, seed=7) == chosen  # a replay chooses the same peers
    draws = {tuple(choose_exact(est, cfg, seed=s)) for s in range(20)}
    assert len(draws) > 3  # the audit depends on the seed


def test_choose_exact_with_few_peers_scores_them_all():
    est = {1: 0.3, 2: 0.1, 3: -0.2}
    assert choose_exact(est, _cfg(), seed=0) == [1, 2, 3]
    assert choose_exact({}, _cfg(), seed=0) == []


def test_calibrated_fits_a_line_on_the_exact_peers():
    est = {1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0}
    exact = {1: 0.5, 3: 1.5}  # exact = 0.5 * estimate
    assert calibrated(est, exact) == pytest.approx({1: 0.5, 2: 1.0, 3: 1.5, 4: 2.0})
    inverted = calibrated(est, {1: 2.0, 3: 1.0})  # a falling line would invert the ranking
    assert inverted[2] == 2.0 and inverted[4] == 4.0
    assert calibrated(est, {1: 0.7}) == {1: 0.7, 2: 2.0, 3: 3.0, 4: 4.0}


def test_spearman_and_topg_overlap_against_scipy_and_by_hand():
    from scipy.stats import spearmanr

    a = {1: 0.3, 2: 0.1, 3: 0.1, 4: -0.2, 5: 0.9}
    b = {1: 0.2, 2: 0.3, 3: 0.0, 4: -0.1, 5: 0.5}
    uids = sorted(a)
    assert spearman(a, b) == pytest.approx(spearmanr([a[u] for u in uids], [b[u] for u in uids]).statistic)
    assert topg_overlap(a, b, 2) == 0.5  # {5, 1} against {5, 2}
    assert topg_overlap(a, b, 5) == 1.0
    with pytest.raises(ValueError, match="same peers"):
        spearman(a, {1: 0.0, 2: 1.0})
