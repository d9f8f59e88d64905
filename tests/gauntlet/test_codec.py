"""The DCT top-k codec against dense references: scipy's DCT, Parseval, naive scatter loops."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import scipy.fft
import torch

from gauntlet import codec as codec_module
from gauntlet.codec import DCTCodec, Layout, _topk_canonical, layout
from gauntlet.config import CodecConfig

SHAPES = [(128, 96), (64, 64), (100,), (7,), (344, 128), (12, 7)]


def _rand(shape: tuple[int, ...], seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _full(chunk: int = 64) -> DCTCodec:
    """A codec that keeps every coefficient, so `vals` is the whole DCT in index order."""
    return DCTCodec(chunk=chunk, topk=chunk * chunk)


@pytest.mark.parametrize(
    ("dim", "edge"), [(64, 64), (128, 64), (100, 50), (96, 48), (7, 7), (4096, 64), (344, 43), (1, 1), (67, 1)]
)
def test_chunk_edge_is_largest_divisor_up_to_chunk(dim: int, edge: int) -> None:
    lay = layout((dim,), 64, 32)
    assert lay.block == (edge,)
    assert lay.n_chunks == dim // edge
    assert lay.k == min(32, edge)


def test_layout_of_a_matrix() -> None:
    assert layout((4096, 344), 64, 32) == Layout(
        shape=(4096, 344), block=(64, 43), n_chunks=64 * 8, chunk_elems=64 * 43, k=32
    )
    assert layout((3, 5), 64, 32).k == 15  # fewer elements than topk: keep them all


@pytest.mark.parametrize("shape", [(), (2, 3, 4), (0,), (4, 0)])
def test_layout_rejects_other_ranks_and_empty_dims(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        layout(shape, 64, 32)


def _blocks(x: np.ndarray, block: tuple[int, ...]) -> list[np.ndarray]:
    """Chunks in row-major order of the block grid, as the codec numbers them."""
    if x.ndim == 1:
        return [x[i : i + block[0]] for i in range(0, x.shape[0], block[0])]
    return [
        x[i : i + block[0], j : j + block[1]]
        for i in range(0, x.shape[0], block[0])
        for j in range(0, x.shape[1], block[1])
    ]


@pytest.mark.parametrize("shape", SHAPES)
def test_dct_matches_scipy_per_block(shape: tuple[int, ...]) -> None:
    x = _rand(shape, dtype=torch.float64)
    codec = _full()
    lay = codec.layout(shape)
    idx, vals = codec.encode(x)
    assert torch.equal(idx, torch.arange(lay.chunk_elems).expand(lay.n_chunks, -1))
    for chunk, block in enumerate(_blocks(x.numpy(), lay.block)):
        ref = scipy.fft.dctn(block, norm="ortho").reshape(-1)
        np.testing.assert_allclose(vals[chunk].numpy(), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip_keeping_everything_is_exact(shape: tuple[int, ...]) -> None:
    x = _rand(shape)
    codec = _full()
    out = codec.decode(*codec.encode(x), shape)
    assert out.dtype == torch.float32
    assert (out - x).abs().max().item() < 1e-5


@pytest.mark.parametrize("shape", SHAPES)
def test_topk_error_energy_is_the_dropped_energy(shape: tuple[int, ...]) -> None:
    x = _rand(shape, seed=1, dtype=torch.float64)
    codec = DCTCodec(chunk=64, topk=8)
    lay = codec.layout(shape)
    idx, vals = codec.encode(x)
    err = ((codec.decode(idx, vals, shape).double() - x) ** 2).sum().item()
    coef = _full().encode(x)[1].double()  # (C, E)
    kept = coef.gather(1, idx) ** 2
    dropped = (coef**2).sum().item() - kept.sum().item()
    assert err == pytest.approx(dropped, rel=1e-4, abs=1e-9)
    per_chunk_total = (coef**2).sum(dim=1)
    assert bool((kept.sum(dim=1) >= lay.k / lay.chunk_elems * per_chunk_total - 1e-9).all())


def test_topk_keeps_the_largest_magnitudes_in_ascending_index_order() -> None:
    x = _rand((128, 128), seed=2)
    idx, vals = DCTCodec(64, 32).encode(x)
    coef = _full().encode(x)[1].abs()  # (C, E)
    assert bool((idx[:, 1:] > idx[:, :-1]).all())
    assert torch.equal(vals, _full().encode(x)[1].gather(1, idx))
    dropped = coef.scatter(1, idx, 0.0)
    assert bool((vals.abs().amin(dim=1) >= dropped.amax(dim=1)).all())


def test_ties_at_the_cut_go_to_the_lower_index() -> None:
    # Chunk 2: (1, 0) -> (1/sqrt2, 1/sqrt2) and (0, 3) -> (3/sqrt2, -3/sqrt2) tie exactly in
    # float32; (1, -3) -> (-2/sqrt2, 4/sqrt2) does not.
    x = torch.tensor([1.0, 0.0] * 5 + [0.0, 3.0] * 3 + [1.0, -3.0] * 2)
    coef = DCTCodec(chunk=2, topk=2).encode(x)[1]
    assert torch.equal(coef[:8, 0].abs(), coef[:8, 1].abs())  # the ties are real
    idx, _ = DCTCodec(chunk=2, topk=1).encode(x)
    assert idx.flatten().tolist() == [0] * 8 + [1] * 2


def _naive_topk(row: list[float], k: int) -> list[int]:
    return sorted(sorted(range(len(row)), key=lambda i: (-row[i], i))[:k])


def test_canonical_topk_matches_a_naive_rank_on_heavy_ties() -> None:
    gen = torch.Generator().manual_seed(3)
    mag = torch.randint(0, 4, (50, 20), generator=gen).float()  # many equal values per row
    mag[0] = 1.0  # a row that is one tie
    for k in (1, 5, 19, 20):
        got = _topk_canonical(mag, k)
        assert got.tolist() == [_naive_topk(row, k) for row in mag.tolist()]


def test_zero_tensor_round_trips_to_zero() -> None:
    codec = DCTCodec()
    for shape in [(128, 64), (96,)]:
        idx, vals = codec.encode(torch.zeros(shape))
        assert not vals.any()
        assert not codec.decode(idx, vals, shape).any()


def test_dtypes_and_devices_of_the_outputs() -> None:
    codec = DCTCodec(64, 32)
    x = _rand((64, 128), seed=4)
    ref_idx, ref_vals = codec.encode(x)
    for dtype in (torch.float64, torch.bfloat16, torch.float16):
        idx, vals = codec.encode(x.to(dtype))
        assert idx.dtype == torch.int64 and vals.dtype == torch.float32
        if dtype == torch.float64:
            assert torch.equal(idx, ref_idx)
            torch.testing.assert_close(vals, ref_vals, rtol=0, atol=1e-5)
    out = codec.decode(ref_idx.to(torch.int16), ref_vals.double(), x.shape)
    assert out.dtype == torch.float32 and out.shape == x.shape


def test_indices_fit_int16_for_chunk_64() -> None:
    codec = DCTCodec(64, 32)
    assert codec.layout((4096, 4096)).chunk_elems - 1 <= torch.iinfo(torch.int16).max
    idx, vals = codec.encode(_rand((256, 256), seed=5))
    assert torch.equal(idx.to(torch.int16).to(torch.int64), idx)
    assert torch.equal(codec.decode(idx.to(torch.int16), vals, (256, 256)), codec.decode(idx, vals, (256, 256)))


def _peers(codec: DCTCodec, shape: tuple[int, ...], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [codec.encode(_rand(shape, seed=10 + p)) for p in range(n)]
    return torch.stack([i for i, _ in pairs]), torch.stack([v for _, v in pairs])  # (P, C, k)


@pytest.mark.parametrize("shape", [(128, 96), (100,)])
@pytest.mark.parametrize("slab_peers", [1, 2, 64])  # a peer per slab, slabs of 2 (one partial), all
def test_decode_batch_equals_a_loop_of_decode(
    shape: tuple[int, ...], slab_peers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(codec_module, "_SLAB_ELEMS", slab_peers * math.prod(shape))
    codec = DCTCodec(64, 16)
    idx, vals = _peers(codec, shape, 5)
    batch = codec.decode_batch(idx, vals, shape)
    assert batch.shape == (5, *shape)
    for p in range(5):
        expected = _full().decode(
            torch.arange(codec.layout(shape).chunk_elems).expand(idx.shape[1], -1),
            torch.zeros(idx.shape[1], codec.layout(shape).chunk_elems).scatter(1, idx[p], vals[p]),
            shape,
        )
        torch.testing.assert_close(batch[p], codec.decode(idx[p], vals[p], shape), rtol=0, atol=1e-6)
        torch.testing.assert_close(batch[p], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(128, 96), (100,), (12, 7)])
def test_decode_mean_equals_a_naive_loop(shape: tuple[int, ...]) -> None:
    codec = DCTCodec(64, 4)  # few coefficients out of many: some indices shared, most not
    lay = codec.layout(shape)
    x = [_rand(shape, seed=20 + p) for p in range(4)]
    x[1] = x[0] + 0.01 * x[1]  # peers 0 and 1 mostly choose the same indices
    pairs = [codec.encode(t) for t in x]
    sums: dict[tuple[int, int], float] = {}
    counts: dict[tuple[int, int], int] = {}
    for idx, vals in pairs:
        for c in range(lay.n_chunks):
            for i, v in zip(idx[c].tolist(), vals[c].tolist(), strict=True):
                sums[(c, i)] = sums.get((c, i), 0.0) + v
                counts[(c, i)] = counts.get((c, i), 0) + 1
    assert max(counts.values()) > 1  # the test exercises coinciding indices
    merged = torch.zeros(lay.n_chunks, lay.chunk_elems)
    for (c, i), total in sums.items():
        merged[c, i] = total / counts[(c, i)]
    everything = _full()
    expected = everything.decode(
        torch.arange(lay.chunk_elems).expand(lay.n_chunks, -1), merged, shape
    )
    got = codec.decode_mean(torch.stack([i for i, _ in pairs]), torch.stack([v for _, v in pairs]), shape)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_encode_all_decode_all_round_trip() -> None:
    tensors = {"w": _rand((64, 128), seed=6), "b": _rand((128,), seed=7)}
    codec = DCTCodec(64, 8192)
    c = codec.encode_all(tensors)
    assert set(c) == {"w", "b"}
    out = codec.decode_all(c, {n: tuple(t.shape) for n, t in tensors.items()})
    for name, t in tensors.items():
        assert (out[name] - t).abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="no shape given"):
        codec.decode_all(c, {"w": (64, 128)})


def test_decode_rejects_malformed_coefficients() -> None:
    codec = DCTCodec(64, 32)
    idx, vals = codec.encode(_rand((64, 64)))
    with pytest.raises(ValueError, match="must be"):
        codec.decode(idx[:, :31], vals[:, :31], (64, 64))
    with pytest.raises(ValueError, match="out of range"):
        codec.decode(idx + 4096, vals, (64, 64))
    negative = idx.clone()
    negative[0, 3] = -1
    with pytest.raises(ValueError, match="out of range"):
        codec.decode(negative, vals, (64, 64))
    with pytest.raises(ValueError, match="integer"):
        codec.decode(idx.float(), vals, (64, 64))
    with pytest.raises(ValueError, match="floating-point"):
        codec.encode(torch.ones(8, dtype=torch.int64))
    with pytest.raises(ValueError, match=re.escape("(2, 2, 2)")):
        codec.encode(torch.zeros(2, 2, 2))


def test_decode_refuses_non_finite_values() -> None:
    codec = DCTCodec(64, 32)
    idx, vals = codec.encode(_rand((64, 64)))
    for bad in (math.nan, math.inf, -math.inf):
        broken = vals.clone()
        broken[0, 2] = bad
        with pytest.raises(ValueError, match="NaN or Inf"):
            codec.decode(idx, broken, (64, 64))
        with pytest.raises(ValueError, match="NaN or Inf"):
            codec.decode_mean(idx.unsqueeze(0), broken.unsqueeze(0), (64, 64))
    with pytest.raises(ValueError, match="NaN or Inf"):  # float64 beyond float32 becomes inf
        codec.decode(idx, vals.double() * 1e300, (64, 64))


@pytest.mark.parametrize("shape", [(128, 64), (100,)])
def test_extreme_finite_values_decode_exactly_scaled_and_never_nan(shape: tuple[int, ...]) -> None:
    """Scaling by a power of two is exact, so decoding 2**60 * v is 2**60 * decode(v) bit for bit;
    at float32's largest values every output element is a number or +-inf, never NaN."""
    codec = DCTCodec(64, 32)
    idx, vals = codec.encode(_rand(shape, seed=3))
    assert torch.equal(codec.decode(idx, vals * 2.0**60, shape), codec.decode(idx, vals, shape) * 2.0**60)
    both = (torch.stack([idx, idx]), torch.stack([vals, vals * 2.0**60]))
    batch = codec.decode_batch(*both, shape)
    torch.testing.assert_close(batch[0], codec.decode(idx, vals, shape))  # a quiet peer is not scaled by a loud one
    torch.testing.assert_close(batch[1], batch[0] * 2.0**60)
    huge = torch.sign(vals) * torch.finfo(torch.float32).max  # all at +-3.4e38
    mean = codec.decode_mean(torch.stack([idx] * 3), torch.stack([huge] * 3), shape)
    for out in (codec.decode(idx, huge, shape), mean):
        assert not bool(out.isnan().any())
        assert bool((torch.sign(out) == torch.sign(codec.decode(idx, torch.sign(vals), shape))).all())


def test_from_config_uses_the_consensus_values() -> None:
    codec = DCTCodec.from_config(CodecConfig(chunk=32, topk=8))
    assert (codec.chunk, codec.topk) == (32, 8)
    assert codec.layout((128, 64)).block == (32, 32)


@pytest.mark.gpu
def test_cuda_encoding_matches_cpu() -> None:
    codec = DCTCodec(64, 32)
    x = _rand((256, 192), seed=8)
    idx, vals = codec.encode(x)
    gidx, gvals = codec.encode(x.cuda())
    assert gidx.is_cuda and gvals.is_cuda
    assert torch.equal(gidx.cpu(), idx)
    torch.testing.assert_close(gvals.cpu(), vals, rtol=0, atol=1e-4)
    dec = codec.decode_mean(gidx.unsqueeze(0), gvals.unsqueeze(0), x.shape)
    assert dec.is_cuda
    torch.testing.assert_close(dec.cpu(), codec.decode(idx, vals, x.shape), rtol=0, atol=1e-4)
