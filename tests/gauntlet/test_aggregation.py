"""Aggregation against a naive per-index loop; normalisation invariance; the sign step."""

from __future__ import annotations

import math

import pytest
import torch

from gauntlet.aggregation import aggregate, sign_step
from gauntlet.codec import Compressed, DCTCodec

SHAPES = {"layer.w": (128, 96), "layer.b": (96,), "emb": (12, 7)}


def _peer(codec: DCTCodec, seed: int, base: dict[str, torch.Tensor] | None = None) -> Compressed:
    gen = torch.Generator().manual_seed(seed)
    tensors = {n: torch.randn(s, generator=gen) for n, s in SHAPES.items()}
    if base is not None:  # a peer close to another: many coinciding indices
        tensors = {n: base[n] + 0.05 * t for n, t in tensors.items()}
    return codec.encode_all(tensors)


def _peers(codec: DCTCodec, n: int) -> list[Compressed]:
    gen = torch.Generator().manual_seed(99)
    common = {name: torch.randn(s, generator=gen) for name, s in SHAPES.items()}
    return [_peer(codec, seed, common if seed % 2 else None) for seed in range(n)]


def _naive(codec: DCTCodec, peers: list[Compressed]) -> dict[str, torch.Tensor]:
    """Per-index mean of unit-normed values in plain Python, then a dense IDCT of all coefficients."""
    everything = DCTCodec(codec.chunk, topk=codec.chunk**2)
    out = {}
    for name, shape in SHAPES.items():
        lay = codec.layout(shape)
        sums: dict[tuple[int, int], float] = {}
        counts: dict[tuple[int, int], int] = {}
        for peer in peers:
            idx, vals = peer[name]
            norm = math.sqrt(sum(v * v for v in vals.flatten().tolist()))
            for c in range(lay.n_chunks):
                for i, v in zip(idx[c].tolist(), vals[c].tolist(), strict=True):
                    sums[(c, i)] = sums.get((c, i), 0.0) + (v / norm if norm > 0 else 0.0)
                    counts[(c, i)] = counts.get((c, i), 0) + 1
        merged = torch.zeros(lay.n_chunks, lay.chunk_elems, dtype=torch.float64)
        for key, total in sums.items():
            merged[key] = total / counts[key]
        every = torch.arange(lay.chunk_elems).expand(lay.n_chunks, -1)
        out[name] = everything.decode(every, merged, shape)
    return out


def test_aggregate_matches_a_naive_loop() -> None:
    codec = DCTCodec(64, 8)
    peers = _peers(codec, 5)
    got = aggregate(codec, peers, SHAPES)
    want = _naive(codec, peers)
    assert set(got) == set(SHAPES)
    for name, shape in SHAPES.items():
        assert got[name].shape == shape and got[name].dtype == torch.float32
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6)


def test_merging_over_all_peers_is_the_mean_of_their_decoded_updates() -> None:
    """merge = "all" (ours): the naive loop's sums over every peer, and the mean of each peer's
    own unit-normed decode (the dense mean the robust-rule benchmark steps with)."""
    codec = DCTCodec(64, 8)
    peers = _peers(codec, 5)
    got = aggregate(codec, peers, SHAPES, merge="all")
    chosen = aggregate(codec, peers, SHAPES)
    for name, shape in SHAPES.items():
        unit = [codec.decode(*p[name], shape) / torch.linalg.vector_norm(p[name][1]) for p in peers]
        torch.testing.assert_close(got[name], torch.stack(unit).mean(0), rtol=0, atol=1e-6)
        assert not torch.allclose(got[name], chosen[name])  # coinciding indices: the two merges differ
    alone = aggregate(codec, peers[:1], SHAPES, merge="all")  # one peer: the same either way
    for name, value in aggregate(codec, peers[:1], SHAPES).items():
        torch.testing.assert_close(alone[name], value, rtol=0, atol=0)
    with pytest.raises(ValueError, match="merge must be one of"):
        aggregate(codec, peers, SHAPES, merge="median")


def test_scaling_a_peer_changes_nothing() -> None:
    codec = DCTCodec(64, 8)
    peers = _peers(codec, 4)
    loud = [dict(p) for p in peers]
    loud[2] = {name: (idx, vals * 1000.0) for name, (idx, vals) in peers[2].items()}
    loud[3] = {name: (idx, vals * 1e25) for name, (idx, vals) in peers[3].items()}  # squares overflow float32
    before, after = aggregate(codec, peers, SHAPES), aggregate(codec, loud, SHAPES)
    for name in SHAPES:
        torch.testing.assert_close(after[name], before[name], rtol=1e-5, atol=1e-7)


def test_values_at_the_ends_of_float32_aggregate_finitely() -> None:
    """Any finite float32 file, from +-3.4e38 down to subnormals, gives a finite aggregate: the
    unit norm is taken in float64, so neither the squares overflow nor the tiny peer is lost."""
    codec = DCTCodec(64, 8)
    peers = _peers(codec, 3)
    top = torch.finfo(torch.float32).max
    extreme = [{name: (idx, torch.sign(vals) * top) for name, (idx, vals) in peers[0].items()},
               {name: (idx, torch.sign(vals) * 1e-44) for name, (idx, vals) in peers[1].items()}, peers[2]]
    got = aggregate(codec, extreme, SHAPES)
    want = _naive(codec, [{n: (i, torch.sign(v)) for n, (i, v) in p.items()} for p in extreme[:2]] + [peers[2]])
    for name in SHAPES:
        assert bool(torch.isfinite(got[name]).all())
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6)


def test_a_zero_peer_stays_zero_and_is_finite() -> None:
    codec = DCTCodec(64, 8)
    peers = _peers(codec, 2)
    silent = {name: (idx, torch.zeros_like(vals)) for name, (idx, vals) in peers[0].items()}
    alone = aggregate(codec, [silent], SHAPES)
    assert all(not t.any() for t in alone.values())
    with_silent = aggregate(codec, [silent, peers[1]], SHAPES)
    assert all(bool(torch.isfinite(t).all()) for t in with_silent.values())
    torch.testing.assert_close(with_silent["emb"], _naive(codec, [silent, peers[1]])["emb"], rtol=0, atol=1e-6)


def test_empty_and_incomplete_gather_sets_are_errors() -> None:
    codec = DCTCodec(64, 8)
    with pytest.raises(ValueError, match="at least one peer"):
        aggregate(codec, [], SHAPES)
    peers = _peers(codec, 3)
    del peers[1]["layer.b"]
    with pytest.raises(ValueError, match=r"peer 1 has no tensor 'layer.b'"):
        aggregate(codec, peers, SHAPES)
    peers = _peers(codec, 2)
    peers[1]["stray"] = peers[1]["emb"]
    with pytest.raises(ValueError, match="peer 1 has tensors the model lacks"):
        aggregate(codec, peers, SHAPES)


def test_sign_step_moves_each_parameter_by_lr_or_zero() -> None:
    gen = torch.Generator().manual_seed(0)
    params = {"w": torch.randn(32, 16, generator=gen, dtype=torch.float64, requires_grad=True)}
    delta = {"w": torch.randn(32, 16, generator=gen)}
    delta["w"][0, :5] = 0.0
    before = params["w"].detach().clone()
    lr = 1e-3
    sign_step(params, delta, lr)
    moved = before - params["w"].detach()  # (32, 16)
    torch.testing.assert_close(moved, lr * torch.sign(delta["w"]).double(), rtol=0, atol=1e-15)
    assert not moved[0, :5].any()
    assert bool((moved.abs()[delta["w"] != 0] - lr).abs().max() < 1e-15)


def test_sign_step_rejects_mismatched_deltas() -> None:
    params = {"w": torch.zeros(4, 4), "b": torch.zeros(4)}
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        sign_step(params, {"w": torch.ones(4, 4)}, 0.1)
    with pytest.raises(ValueError, match="has shape"):
        sign_step(params, {"w": torch.ones(16), "b": torch.ones(4)}, 0.1)
    assert not params["w"].any()  # nothing moved on a refused step


# --- Multi-Krum before the first gather list (aggregation.startup, ours) ---------------------------

def _dense_unit(codec, peer: Compressed) -> torch.Tensor:
    """The peer's update as `aggregate` merges it: decoded, each tensor at unit norm, flattened."""
    dense = codec.decode_all(peer, SHAPES)
    return torch.cat([(t / t.norm() if t.norm() > 0 else t).flatten().double() for t in dense.values()])


@pytest.mark.parametrize("kind", ["dct", "sparseloco"])
def test_peer_distances_on_coefficients_equal_the_decoded_updates(kind):
    from gauntlet.aggregation import peer_distances
    from gauntlet.sparseloco import SparseLoCoCodec
    codec = DCTCodec(chunk=16, topk=8) if kind == "dct" else SparseLoCoCodec(chunk=16, topk=8)
    peers = _peers(codec, 6)
    rows = [_dense_unit(codec, p) for p in peers]
    want = torch.tensor([[float((a - b).pow(2).sum()) for b in rows] for a in rows], dtype=torch.float64)
    got = peer_distances(codec, peers, SHAPES)
    assert got.dtype == torch.float64 and torch.allclose(got, want, atol=1e-6)
    assert torch.equal(got, got.T) and float(got.diagonal().abs().max()) == 0.0


def _naive_multi_krum(d: list[list[float]], f: int) -> list[int]:
    n = len(d)
    score = [sum(sorted(d[i][j] for j in range(n) if j != i)[: n - f - 1]) / (n - f - 1) for i in range(n)]
    return sorted(sorted(range(n), key=lambda i: (score[i], i))[: n - f])


def test_multi_krum_against_a_naive_loop():
    from gauntlet.aggregation import multi_krum
    gen = torch.Generator().manual_seed(3)
    for n, f in [(3, 0), (5, 1), (7, 2), (11, 4), (12, 3)]:
        x = torch.randn(n, 9, generator=gen, dtype=torch.float64)
        d = torch.cdist(x, x).pow(2).round(decimals=9)
        assert multi_krum(d, f) == _naive_multi_krum(d.tolist(), f)


def test_multi_krum_drops_a_group_of_attackers_and_copies_do_not_vouch_for_each_other():
    """Five honest updates near a common direction, two identical sign-flipped ones (distance 0
    between them): with f = 2 the attackers' three nearest include two honest files, far away."""
    from gauntlet.aggregation import multi_krum, peer_distances, tolerated
    codec = DCTCodec(chunk=16, topk=8)
    gen = torch.Generator().manual_seed(11)
    common = {n: torch.randn(s, generator=gen) for n, s in SHAPES.items()}
    honest = [codec.encode_all({n: common[n] + 0.8 * torch.randn(s, generator=gen) for n, s in SHAPES.items()})
              for _ in range(5)]
    flipped = codec.encode_all({n: -common[n] for n in SHAPES})
    peers = honest + [flipped, flipped]
    assert tolerated(len(peers), 0.4) == 2
    assert multi_krum(peer_distances(codec, peers, SHAPES), 2) == [0, 1, 2, 3, 4]


def test_tolerated_and_multi_krum_refuse_what_krum_cannot_guarantee():
    from gauntlet.aggregation import multi_krum, tolerated
    assert [tolerated(n, 0.4) for n in (0, 1, 2, 3, 4, 5, 7, 10, 13, 100)] == [0, 0, 0, 0, 0, 1, 2, 3, 5, 40]
    assert tolerated(9, 0.0) == 0 and tolerated(101, 0.49) == 49
    assert multi_krum(torch.zeros(2, 2, dtype=torch.float64), 0) == [0, 1]  # f = 0: everyone
    with pytest.raises(ValueError, match="needs n >= 2f \\+ 3"):
        multi_krum(torch.zeros(6, 6, dtype=torch.float64), 2)
    with pytest.raises(ValueError, match="square"):
        multi_krum(torch.zeros(3, 4, dtype=torch.float64), 0)


def test_peer_distances_of_hostile_values_stay_finite():
    """A finite but extreme value (3e38) is normalised like any other: distances stay in [0, 4 x tensors]."""
    from gauntlet.aggregation import peer_distances
    codec = DCTCodec(chunk=16, topk=8)
    peers = _peers(codec, 3)
    idx, vals = peers[2]["layer.w"]
    peers[2] = {**peers[2], "layer.w": (idx, torch.full_like(vals, 3e38))}
    d = peer_distances(codec, peers, SHAPES)
    assert torch.isfinite(d).all() and float(d.max()) <= 4 * len(SHAPES) + 1e-9
