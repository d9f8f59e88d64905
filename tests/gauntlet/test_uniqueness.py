"""Uniqueness: the indicator and its moving average, top-k overlap, copies and who is blamed."""

from __future__ import annotations

import math

import pytest
import torch

from gauntlet.codec import Compressed, DCTCodec
from gauntlet.model import build_model, param_shapes
from gauntlet.ratings import update_moving_average
from gauntlet.uniqueness import (
    CopyFinding, draw_order, find_copies, indicator, overlap_matrix, own_statistic, sequential_own_test,
)

CODEC = DCTCodec(chunk=64, topk=32)


@pytest.fixture(scope="module")
def tiny_shapes() -> dict[str, tuple[int, ...]]:
    """A subset of the tiny LLaMA's tensors: matrices and norm vectors, fast to encode."""
    shapes = param_shapes(build_model("tiny", 512, seed=0))
    keep = [n for n in shapes if ".layers.0." in n or n == "model.norm.weight"]
    return {n: shapes[n] for n in keep}


def _dense(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.randn(s, generator=gen) for n, s in shapes.items()}


def _naive_overlap(a: Compressed, b: Compressed) -> float:
    """Shared (tensor, chunk, index) triples over kept indices, with Python sets."""
    def triples(c: Compressed) -> set[tuple[str, int, int]]:
        return {(n, ch, int(i)) for n, (idx, _) in c.items() for ch, row in enumerate(idx) for i in row}
    ta, tb = triples(a), triples(b)
    assert len(ta) == len(tb)
    return len(ta & tb) / len(ta)


def _synthetic(chunks: int, k: int, elems: int, shared: int, seed: int) -> tuple[Compressed, Compressed]:
    """Two peers whose every chunk shares exactly `shared` of its k indices."""
    gen = torch.Generator().manual_seed(seed)
    a_rows, b_rows = [], []
    for _ in range(chunks):
        perm = torch.randperm(elems, generator=gen)
        a_rows.append(perm[:k].sort().values)
        b_rows.append(torch.cat([perm[:shared], perm[k:2 * k - shared]]).sort().values)
    vals = torch.ones(chunks, k)
    return {"w": (torch.stack(a_rows), vals)}, {"w": (torch.stack(b_rows), vals)}


def test_indicator() -> None:
    assert indicator(0.02, 0.01) == 1
    assert indicator(0.01, 0.01) == -1
    assert indicator(-0.5, 0.01) == -1
    assert indicator(math.nan, 0.01) == -1


def test_moving_average_golden() -> None:
    b = 0.0
    for step in (1, 1, -1):
        b = update_moving_average(b, step)
    assert b == pytest.approx(0.95 * (0.95 * 0.05 + 0.05) - 0.05)
    assert update_moving_average(0.5, -1, ema=0.0) == -1.0
    assert update_moving_average(0.5, 0) == pytest.approx(0.475)  # undecided: B decays toward 0
    with pytest.raises(ValueError, match=r"\+1, 0 or -1"):
        update_moving_average(0.0, 2)
    with pytest.raises(ValueError, match="ema"):
        update_moving_average(0.0, 1, ema=1.0)


@pytest.mark.parametrize("block", [1, 4096 * 3, 2**24])
def test_overlap_matrix_matches_a_set_based_reference(tiny_shapes: dict, block: int) -> None:
    """Odd shapes too: (67,) has 1-element chunks (k = 1), (12, 7) one 84-element chunk."""
    shapes = {**tiny_shapes, "odd.vec": (67,), "odd.mat": (12, 7)}
    base = _dense(shapes, 0)
    gen = torch.Generator().manual_seed(5)
    peers = {
        10: CODEC.encode_all(base),
        3: CODEC.encode_all({n: x + 0.2 * torch.randn(x.shape, generator=gen) for n, x in base.items()}),
        7: CODEC.encode_all(_dense(shapes, 1)),
        5: CODEC.encode_all(_dense(shapes, 2)),
    }
    uids, m = overlap_matrix(peers, max_block_elems=block)
    assert uids == [3, 5, 7, 10]
    assert m.shape == (4, 4) and m.dtype == torch.float64
    for i, a in enumerate(uids):
        for j, b in enumerate(uids):
            want = 1.0 if a == b else _naive_overlap(peers[a], peers[b])
            assert m[i, j].item() == pytest.approx(want, abs=1e-12), (a, b)


def test_overlap_of_exact_fractions() -> None:
    a, b = _synthetic(chunks=10, k=10, elems=100, shared=4, seed=0)
    _, m = overlap_matrix({1: a, 2: b})
    assert m.tolist() == [[1.0, 0.4], [0.4, 1.0]]


def test_overlap_of_no_peers_and_one_peer(tiny_shapes: dict) -> None:
    assert overlap_matrix({})[0] == []
    uids, m = overlap_matrix({4: CODEC.encode_all(_dense(tiny_shapes, 0))})
    assert uids == [4] and m.tolist() == [[1.0]]


def test_overlap_refuses_peers_with_different_tensors(tiny_shapes: dict) -> None:
    a = CODEC.encode_all(_dense(tiny_shapes, 0))
    b = dict(a)
    b.pop("model.norm.weight")
    with pytest.raises(ValueError, match="differ in tensors or shapes"):
        overlap_matrix({1: a, 2: b})


def test_exact_copy_is_identical_and_blames_the_later_uploader(tiny_shapes: dict) -> None:
    honest = CODEC.encode_all(_dense(tiny_shapes, 0))
    peers = {1: honest, 2: {n: (i.clone(), v.clone()) for n, (i, v) in honest.items()}}
    found = find_copies(peers, {1: 100.0, 2: 101.5}, {1: "h", 2: "h"})
    assert found == {2: CopyFinding(uid=2, partner=1, overlap=1.0, action="identical")}
    # the copier uploads first: the honest peer, now the later one, is blamed (the rule is by time)
    assert set(find_copies(peers, {1: 102.0, 2: 101.5}, {1: "h", 2: "h"})) == {1}


def test_copies_with_no_trusted_order_blame_both_never_by_uid(tiny_shapes: dict) -> None:
    """A time the peer's own server reported (None) or a tie (whole seconds) orders nothing: both
    are treated as the later uploader, whatever their uids."""
    honest = CODEC.encode_all(_dense(tiny_shapes, 0))
    peers = {1: honest, 2: {n: (i.clone(), v.clone()) for n, (i, v) in honest.items()}}
    for times in ({1: 100.0, 2: None}, {1: None, 2: None}, {1: 100.0, 2: 100.0}):
        found = find_copies(peers, times, {1: "h", 2: "h"})
        assert set(found) == {1, 2}, times
        assert found[1].partner == 2 and found[2].partner == 1 and found[1].action == "identical"


def test_copy_with_small_noise_is_caught_by_overlap(tiny_shapes: dict) -> None:
    """No hash matches, but the top-k barely moves: overlap >= 0.6 means a ban."""
    dense = _dense(tiny_shapes, 0)
    gen = torch.Generator().manual_seed(9)
    noisy = {n: x + 0.02 * torch.randn(x.shape, generator=gen) for n, x in dense.items()}
    peers = {4: CODEC.encode_all(dense), 9: CODEC.encode_all(noisy)}
    found = find_copies(peers, {4: 50.0, 9: 52.0}, {4: "a", 9: "b"})
    assert found[9].action == "ban" and found[9].partner == 4
    assert 0.9 < found[9].overlap < 1.0
    assert 4 not in found


def test_independent_updates_overlap_little(tiny_shapes: dict) -> None:
    peers = {u: CODEC.encode_all(_dense(tiny_shapes, u)) for u in range(4)}
    uids, m = overlap_matrix(peers)
    off = m[~torch.eye(4, dtype=torch.bool)]
    # chance level: k/E per chunk (32 of 4096 in matrices, 32 of 64 in norm vectors), index-weighted
    lays = [CODEC.layout(s) for s in tiny_shapes.values()]
    chance = sum(l.n_chunks * l.k * l.k / l.chunk_elems for l in lays) / sum(l.n_chunks * l.k for l in lays)
    assert abs(float(off.mean()) - chance) < 0.01
    assert float(off.max()) < 2 * chance < 0.4
    assert find_copies(peers, {u: float(u) for u in uids}, {u: str(u) for u in uids}) == {}


@pytest.mark.parametrize(("shared", "action"), [(39, None), (40, "halve"), (49, "halve"), (50, "reset"),
                                                 (59, "reset"), (60, "ban"), (99, "ban")])
def test_threshold_boundaries_are_inclusive(shared: int, action: str | None) -> None:
    """One chunk of k = 100 out of 1000: `shared` coinciding indices is an overlap of shared/100."""
    a, b = _synthetic(chunks=1, k=100, elems=1000, shared=shared, seed=shared)
    found = find_copies({1: a, 2: b}, {1: 0.0, 2: 1.0}, {1: "x", 2: "y"})
    assert found == ({2: CopyFinding(2, 1, shared / 100, action)} if action else {})


def test_each_uid_keeps_its_worst_finding() -> None:
    """uid 3 shares 45% of its indices with uid 1 (halve) and 55% with uid 2 (reset): reset wins."""
    perm = torch.randperm(1000, generator=torch.Generator().manual_seed(0))
    rows = {1: perm[:100], 2: perm[100:200], 3: torch.cat([perm[:45], perm[100:155]])}
    peers = {u: {"w": (r.sort().values.view(1, 100), torch.ones(1, 100))} for u, r in rows.items()}
    found = find_copies(peers, {1: 1.0, 2: 2.0, 3: 3.0}, {1: "a", 2: "b", 3: "c"})
    assert found == {3: CopyFinding(3, 2, 0.55, "reset")}


def test_identical_outranks_every_overlap_action() -> None:
    a, b = _synthetic(chunks=1, k=10, elems=100, shared=7, seed=3)
    peers = {1: a, 2: b, 3: a}
    found = find_copies(peers, {1: 1.0, 2: 2.0, 3: 3.0}, {1: "a", 2: "b", 3: "a"})
    assert found[3] == CopyFinding(3, 1, 1.0, "identical")
    assert found[2].action == "ban" and found[2].partner == 1


def test_find_copies_checks_its_inputs() -> None:
    a, b = _synthetic(chunks=1, k=10, elems=100, shared=1, seed=0)
    with pytest.raises(ValueError, match="thresholds"):
        find_copies({1: a, 2: b}, {1: 0.0, 2: 1.0}, {1: "x", 2: "y"}, halve=0.6, reset=0.5)
    with pytest.raises(ValueError, match="uids \\[2\\]"):
        find_copies({1: a, 2: b}, {1: 0.0}, {1: "x", 2: "y"})
    matrix = overlap_matrix({1: a, 2: b})
    assert find_copies({1: a, 2: b}, {1: 0.0, 2: 1.0}, {1: "x", 2: "y"}, matrix=matrix) == {}
    with pytest.raises(ValueError, match="other peers"):
        find_copies({1: a, 5: b}, {1: 0.0, 5: 1.0}, {1: "x", 5: "y"}, matrix=matrix)


def _draws(values: list[float]):
    """A draw() over `values`, and the list of what it handed out."""
    it, taken = iter(values), []

    def draw() -> float | None:
        v = next(it, None)
        if v is not None:
            taken.append(v)
        return v
    return draw, taken


SEQ = {"margin": 0.0, "z": 2.0, "sd_floor": 0.5, "max_batches": 6, "undecided": "zero"}


def test_own_statistic_is_welch_with_a_relative_floor() -> None:
    own, rand, s = [3.0, 5.0], [1.0, 1.0, 1.0], 1.0
    d, se = own_statistic(own, rand, s, margin=0.5, sd_floor=0.5)
    assert d == pytest.approx(4.0 - 1.0 - 0.5)
    # own: sample variance 2 (above the floor 0.25); rand: variance 0 -> floored to 0.25
    assert se == pytest.approx(math.sqrt(2.0 / 2 + 0.25 / 3))
    with pytest.raises(ValueError, match="own and random batches"):
        own_statistic([], rand, s, 0.0, 0.5)


def test_clear_own_data_gives_plus_one_without_drawing() -> None:
    draw, taken = _draws([9.0] * 5)
    test = sequential_own_test([2.0, 2.1, 1.9], [1.0, 1.05, 0.95], 1.0, draw, **SEQ)
    assert (test.indicator, test.own_batches, taken) == (1, 3, [])
    assert test.statistic > 2.0


def test_clearly_generic_update_gives_minus_one() -> None:
    draw, taken = _draws([0.1] * 5)
    test = sequential_own_test([0.1, 0.2, 0.1], [1.0, 1.05, 0.95], 1.0, draw, **SEQ)
    assert (test.indicator, taken) == (-1, [])
    assert test.difference < 0 and test.statistic < -2.0


def test_close_call_draws_more_own_batches_until_decided() -> None:
    # one sampled batch at 1.4 x s: with the floored sd (0.2 |s| a side) t = 0.4 / 0.231 < 2;
    # a second own batch at 1.45 gives t = 0.425 / 0.183 > 2
    draw, taken = _draws([1.45, 1.3, 1.3])
    test = sequential_own_test([1.4], [1.0, 1.0, 1.0], 1.0, draw, **{**SEQ, "sd_floor": 0.2})
    assert (test.indicator, test.own_batches, taken) == (1, 2, [1.45])


def test_undecided_at_the_cap_gives_zero_or_the_sign() -> None:
    own, rand = [1.05], [1.0, 0.9, 1.1]
    for undecided, b in (("zero", 0), ("sign", 1), ("negative", 0)):
        draw, taken = _draws([1.0, 1.1, 1.0, 1.1, 1.0, 1.1, 1.0])
        test = sequential_own_test(own, rand, 1.0, draw, **{**SEQ, "undecided": undecided})
        assert (test.indicator, test.own_batches, len(taken)) == (b, 6, 5)  # stopped at max_batches
    draw, _ = _draws([0.9] * 5)  # leaning against the peer: -1 under "negative"
    assert sequential_own_test([0.95], rand, 1.0, draw, **{**SEQ, "undecided": "negative"}).indicator == -1
    draw, taken = _draws([1.0])  # fewer own batches than the cap: stops when they run out
    assert sequential_own_test(own, rand, 1.0, draw, **SEQ).own_batches == 2
    with pytest.raises(ValueError, match="undecided"):
        sequential_own_test(own, rand, 1.0, draw, **{**SEQ, "undecided": "coin"})


def test_nan_improvement_never_earns_plus_one() -> None:
    draw, _ = _draws([])
    assert sequential_own_test([math.nan], [1.0], 1.0, draw, **SEQ).indicator == -1


def test_draw_order_is_a_seeded_permutation() -> None:
    assert draw_order(7, 123) == draw_order(7, 123)
    assert sorted(draw_order(7, 123)) == list(range(7))
    assert draw_order(7, 123) != draw_order(7, 124)  # 1 in 5040 to fail by chance for these seeds
    assert draw_order(0, 1) == []
