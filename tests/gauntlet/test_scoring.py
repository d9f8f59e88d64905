"""The batched scorer against a naive apply-evaluate-restore loop (the reference oracle)."""

from __future__ import annotations

import copy

import pytest
import torch

from gauntlet.model import build_model
from gauntlet.scoring import LossEvaluator, PeerLosses, relative_improvement, score_peers

VOCAB = 256


def _batches(seed: int, n: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (2, 16), generator=g) for _ in range(n)]


def _deltas(model: torch.nn.Module, n: int) -> dict[int, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    return {uid: {name: torch.randn(p.shape, generator=g) for name, p in model.named_parameters()}
            for uid in range(n)}


def _naive_mean_loss(model: torch.nn.Module, batches: list[torch.Tensor]) -> float:
    total, tokens = 0.0, 0
    with torch.no_grad():
        for b in batches:
            n = b[:, 1:].numel()
            total += model(input_ids=b, labels=b).loss.item() * n  # HF's mean over the same tokens
            tokens += n
    return total / tokens


def _naive(model, deltas, own, rand, eta) -> dict[int, PeerLosses]:
    out = {}
    for uid, delta in deltas.items():
        saved = copy.deepcopy(model.state_dict())
        ob, rb = _naive_mean_loss(model, own[uid]), _naive_mean_loss(model, rand)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p -= eta * torch.sign(delta[name])
        oa, ra = _naive_mean_loss(model, own[uid]), _naive_mean_loss(model, rand)
        model.load_state_dict(saved)
        out[uid] = PeerLosses(uid, ob, oa, rb, ra)
    return out


def test_batched_scorer_matches_naive_loop():
    model = build_model("tiny", VOCAB, seed=3)
    deltas = _deltas(model, 3)
    own = {uid: _batches(100 + uid) for uid in deltas}
    rand = _batches(999)
    eta = 0.05  # large enough that the losses move visibly
    reference = _naive(model, deltas, own, rand, eta)
    before = {n: p.clone() for n, p in model.named_parameters()}
    got = score_peers(LossEvaluator(model), deltas, own, rand, eta)
    for uid in deltas:
        for field in ("own_before", "own_after", "rand_before", "rand_after"):
            assert getattr(got[uid], field) == pytest.approx(getattr(reference[uid], field), rel=1e-5)
        assert got[uid].rand_after != pytest.approx(got[uid].rand_before, rel=1e-6)
    for n, p in model.named_parameters():  # the live model is untouched
        assert torch.equal(p, before[n])


def test_per_peer_random_batches_match_shared_when_identical():
    model = build_model("tiny", VOCAB, seed=3)
    deltas = _deltas(model, 2)
    own = {uid: _batches(100 + uid) for uid in deltas}
    rand = _batches(5)
    shared = score_peers(LossEvaluator(model), deltas, own, rand, 0.01)
    per_peer = score_peers(LossEvaluator(model), deltas, own, {u: rand for u in deltas}, 0.01)
    assert shared == per_peer


def test_relative_improvement_guards_non_positive_loss():
    assert relative_improvement(2.0, 1.0) == 0.5
    assert relative_improvement(0.0, -1.0) == 0.0


def test_missing_parameter_in_delta_is_refused():
    model = build_model("tiny", VOCAB, seed=0)
    delta = _deltas(model, 1)[0]
    delta.pop(next(iter(delta)))
    with pytest.raises(ValueError, match="lacks parameters"):
        LossEvaluator(model).perturbed(delta, 0.1)


def test_a_precomputed_random_baseline_gives_identical_losses():
    """Score chunks share L_rand_before computed once: the float round-trips exactly."""
    model = build_model("tiny", VOCAB, seed=3)
    deltas = _deltas(model, 2)
    own = {uid: _batches(100 + uid) for uid in deltas}
    rand = _batches(5)
    evaluator = LossEvaluator(model)
    baseline = evaluator.mean_loss(evaluator.theta, rand).item()
    assert score_peers(evaluator, deltas, own, rand, 0.01, rand_before=baseline) == \
        score_peers(LossEvaluator(model), deltas, own, rand, 0.01)


def _old_mean_loss(evaluator: LossEvaluator, params, batches) -> torch.Tensor:
    """mean_loss as it was before per-batch losses: one float64 sum, batch by batch."""
    total, tokens = torch.zeros((), dtype=torch.float64), 0
    with torch.no_grad():
        for batch in batches:
            loss, n = evaluator._loss_sum(params, batch)
            total += loss.double()
            tokens += n
    return total / tokens


def test_batch_sums_match_a_naive_loop_and_keep_mean_loss_bit_identical():
    model = build_model("tiny", VOCAB, seed=3)
    evaluator = LossEvaluator(model)
    batches = _batches(5, n=3) + [_batches(6, n=1)[0][:1]]  # a shorter last batch weighs less
    sums, counts = evaluator.batch_sums(evaluator.theta, batches)
    assert all(v.dtype == torch.float64 for v in sums) and counts == [b[:, 1:].numel() for b in batches]
    for batch, value, n in zip(batches, [v.item() for v in sums], counts):
        assert value / n == pytest.approx(_naive_mean_loss(model, [batch]), rel=1e-5)
    old = _old_mean_loss(evaluator, evaluator.theta, batches)
    assert evaluator.mean_loss(evaluator.theta, batches).item() == old.item()
    with pytest.raises(ValueError, match="no batches"):
        evaluator.batch_sums(evaluator.theta, [])


@pytest.mark.parametrize("shared", [False, True])
def test_per_batch_scoring_gives_the_same_four_floats_as_score_peers(shared: bool):
    from gauntlet.scoring import more_batches, score_peer_batches

    model = build_model("tiny", VOCAB, seed=3)
    deltas = _deltas(model, 2)
    own = {uid: _batches(100 + uid, n=3) for uid in deltas}
    rand, eta = _batches(999), 0.05
    evaluator = LossEvaluator(model)
    rand_before = evaluator.mean_loss(evaluator.theta, rand).item() if shared else None
    expected = score_peers(evaluator, deltas, own, rand, eta, rand_before)
    rand_sums = evaluator.batch_sums(evaluator.theta, rand) if shared else None
    for uid, delta in deltas.items():
        after = evaluator.perturbed(delta, eta)
        losses, own_l, rand_l = score_peer_batches(evaluator, uid, after, own[uid], rand, rand_sums, rand_before)
        assert losses == expected[uid]  # bit for bit: the audit columns and replays depend on it
        assert len(own_l.improvements) == 3 and len(rand_l.improvements) == 2
        again = more_batches(evaluator, after, own[uid][1:2])
        assert (again.before[0], again.after[0]) == (own_l.before[1], own_l.after[1])
        tokens = sum(own_l.tokens)
        assert sum(b * n for b, n in zip(own_l.before, own_l.tokens)) / tokens == pytest.approx(losses.own_before)


def test_the_perturbed_copy_is_bit_identical_to_copy_then_add():
    """One fused pass must give exactly theta + (-eta) * sign(delta): scores and replays depend on
    these bits. Zeros in the delta (sign 0) and both signs are covered."""
    model = build_model("tiny", VOCAB, seed=0)
    evaluator = LossEvaluator(model)
    delta = _deltas(model, 1)[0]
    delta = {n: t * (t.abs() > 0.5) for n, t in delta.items()}  # many exact zeros
    for eta in (1e-4, 3.7e-3):
        got = evaluator.perturbed(delta, eta)
        for name, theta in evaluator.theta.items():
            want = theta.clone().add_(torch.sign(delta[name]), alpha=-eta)
            assert torch.equal(got[name], want), name
