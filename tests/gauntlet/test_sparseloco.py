"""SparseLoCo codec against naive references: bit-by-bit packing, per-element loops, hand values."""

from __future__ import annotations

import hashlib
import math

import pytest
import safetensors.torch
import torch

from gauntlet.aggregation import aggregate
from gauntlet.codec import _to_chunks
from gauntlet.sparseloco import (
    EF_DECAY,
    PayloadProblem,
    SparseLoCoCodec,
    code_bits,
    dequantize,
    pack_12bit,
    pack_codes,
    quantize,
    unpack_12bit,
    unpack_codes,
)

SHAPES = [(128, 192), (64, 32), (100,), (7,), (12, 7)]


def _rand(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _naive_pack_12bit(values: list[int]) -> bytes:
    """Pairs (a, b) as the 24-bit little-endian integer a + 4096 * b; an odd count padded with 0."""
    padded = values + [0] * (len(values) % 2)
    return b"".join((a + 4096 * b).to_bytes(3, "little") for a, b in zip(padded[0::2], padded[1::2], strict=True))


@pytest.mark.parametrize("n", [4096, 4095, 1, 2, 3, 0])
def test_12bit_packing_is_exact_for_every_value_and_odd_lengths(n: int) -> None:
    values = torch.arange(4096).flip(0)[:n] if n != 4096 else torch.arange(4096)
    packed = pack_12bit(values)
    assert packed.dtype == torch.uint8 and packed.numel() == 3 * math.ceil(n / 2)
    assert packed.numpy().tobytes() == _naive_pack_12bit(values.tolist())
    back, pad = unpack_12bit(packed, n)
    assert torch.equal(back, values) and int(pad) == 0


def test_12bit_packing_of_a_matrix_is_row_major_and_refuses_wide_values() -> None:
    idx = torch.randint(0, 4096, (9, 5), generator=torch.Generator().manual_seed(1))
    assert pack_12bit(idx).numpy().tobytes() == _naive_pack_12bit(idx.flatten().tolist())
    with pytest.raises(ValueError, match=r"\[0, 4096\)"):
        pack_12bit(torch.tensor([0, 4096]))
    with pytest.raises(ValueError, match=r"\[0, 4096\)"):
        pack_12bit(torch.tensor([-1, 2]))


@pytest.mark.parametrize("bins", [2, 3, 4, 16, 256])
@pytest.mark.parametrize("n", [1, 7, 8, 1001])
def test_code_packing_round_trips_low_bits_first(bins: int, n: int) -> None:
    bits = code_bits(bins)
    codes = torch.randint(0, bins, (n,), generator=torch.Generator().manual_seed(n))
    packed = pack_codes(codes, bits)
    per = 8 // bits
    padded = codes.tolist() + [0] * ((-n) % per)
    naive = bytes(sum(c << (bits * j) for j, c in enumerate(padded[i:i + per])) for i in range(0, len(padded), per))
    assert packed.numpy().tobytes() == naive
    back, pad = unpack_codes(packed, n, bits)
    assert torch.equal(back, codes) and not pad.any()


def test_quantisation_by_hand() -> None:
    # mean 0, sigma = sqrt(20/3), scale = 6 * sigma / 4 = 3.873; c / scale + 2 = 1.23, 1.74, 2.26, 2.77
    codes, qp = quantize(torch.tensor([-3.0, -1.0, 1.0, 3.0]), bins=4, range_sigmas=6.0)
    assert codes.tolist() == [1, 2, 2, 3]
    assert qp[0].item() == 0.0
    assert qp[1].item() == pytest.approx(1.5 * math.sqrt(20 / 3), rel=1e-6)
    assert qp[2:].tolist() == [0.0, -3.0, 0.0, 3.0]  # bin means; an empty bin decodes to the shift
    assert dequantize(codes, qp).tolist() == [-3.0, 0.0, 0.0, 3.0]


@pytest.mark.parametrize("seed", range(4))
def test_quantisation_error_bounds(seed: int) -> None:
    """Each value and its decoded value lie within half a level spacing (scale / 2) of the same
    level; so the error is at most one spacing, and inside the edge bins (which also hold the
    clamped tails) at most the spread of that bin. The decoded value is the bin's mean, not its
    level, which is why the bound is not scale / 2: in exchange its squared error is never worse
    than decoding to the levels."""
    v = _rand((40, 64), seed=seed) * (1 + 9 * seed)
    v[0, :3] = torch.tensor([30.0, -30.0, 0.0]) * v.std()  # far tails, clamped into the edge bins
    codes, qp = quantize(v, bins=4, range_sigmas=6.0)
    shift, scale = qp[0].double(), qp[1].double()
    c = v.double() - shift
    assert scale.item() == pytest.approx(1.5 * c.std().item(), rel=1e-6)  # 4 levels over 6 sigma
    assert torch.equal(codes, torch.round(c / scale + 2).clamp(0, 3).long())
    deq = dequantize(codes, qp).double() - shift
    level = (codes - 2).double() * scale
    tol = 1e-5 * scale
    inner = (codes == 1) | (codes == 2)
    assert bool(((c - level).abs()[inner] <= scale / 2 + tol).all())
    assert bool(((deq - level).abs()[inner] <= scale / 2 + tol).all())
    assert bool(((deq - c).abs()[inner] <= scale + tol).all())
    for edge in (0, 3):
        members = c[codes == edge]
        if members.numel():
            spread = members.max() - members.min()
            assert bool(((deq - c).abs()[codes == edge] <= spread + tol).all())
    assert ((deq - c) ** 2).sum() <= ((level - c) ** 2).sum() + tol**2


def test_quantisation_of_constant_and_single_values() -> None:
    codes, qp = quantize(torch.full((3, 4), 2.5), bins=4, range_sigmas=6.0)
    assert qp[1].item() == 1.0 and torch.equal(dequantize(codes, qp), torch.full((3, 4), 2.5))
    codes, qp = quantize(torch.tensor([-7.0]), bins=4, range_sigmas=6.0)
    assert dequantize(codes, qp).tolist() == [-7.0]


@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip_keeps_the_top_k_of_each_chunk(shape: tuple[int, ...]) -> None:
    codec = SparseLoCoCodec(chunk=64, topk=64)
    x = _rand(shape, seed=3)
    lay = codec.layout(shape)
    q = codec.encode_q(x)
    idx, vals = codec.encode(x)
    assert torch.equal(idx, q.idx) and torch.equal(vals, q.vals)
    assert idx.shape == (lay.n_chunks, lay.k) and bool((idx[:, 1:] > idx[:, :-1]).all())
    mags = _to_chunks(x.abs(), lay)  # (C, E)
    dropped = mags.scatter(1, idx, -1.0)
    assert bool((mags.gather(1, idx).amin(dim=1) >= dropped.amax(dim=1)).all())
    dense = codec.decode(idx, vals, shape)
    assert torch.equal(_to_chunks(dense, lay).gather(1, idx), vals)
    kept = codec.decode(idx, torch.ones_like(vals), shape).flatten() == 1
    assert int(kept.sum()) == lay.n_chunks * lay.k and not dense.flatten()[~kept].any()
    out = codec.decode_payload(q.pack(), shape, "w")
    assert isinstance(out, tuple) and torch.equal(out[0], idx) and torch.equal(out[1], vals)


def test_ties_go_to_the_lower_index() -> None:
    x = torch.tensor([1.0, -2.0, 2.0, 0.5, -2.0, 2.0])
    idx, _ = SparseLoCoCodec(chunk=6, topk=2).encode(x)
    assert idx.tolist() == [[1, 2]]


def _naive_position(shape: tuple[int, ...], block: tuple[int, ...], chunk: int, i: int) -> tuple[int, ...]:
    if len(shape) == 1:
        return (chunk * block[0] + i,)
    per_row = shape[1] // block[1]
    return ((chunk // per_row) * block[0] + i // block[1], (chunk % per_row) * block[1] + i % block[1])


@pytest.mark.parametrize("shape", [(128, 192), (100,), (12, 7)])
def test_decode_mean_equals_a_naive_loop(shape: tuple[int, ...]) -> None:
    codec = SparseLoCoCodec(chunk=64, topk=8)
    lay = codec.layout(shape)
    x = [_rand(shape, seed=20 + p) for p in range(4)]
    x[1] = x[0] + 0.01 * x[1]  # peers 0 and 1 mostly choose the same indices
    pairs = [codec.encode(t) for t in x]
    sums: dict[tuple[int, ...], float] = {}
    counts: dict[tuple[int, ...], int] = {}
    for idx, vals in pairs:
        for c in range(lay.n_chunks):
            for i, v in zip(idx[c].tolist(), vals[c].tolist(), strict=True):
                pos = _naive_position(shape, lay.block, c, i)
                sums[pos] = sums.get(pos, 0.0) + v
                counts[pos] = counts.get(pos, 0) + 1
    assert max(counts.values()) > 1
    expected = torch.zeros(shape)
    for pos, total in sums.items():
        expected[pos] = total / counts[pos]
    idx, vals = torch.stack([i for i, _ in pairs]), torch.stack([v for _, v in pairs])
    torch.testing.assert_close(codec.decode_mean(idx, vals, shape), expected, rtol=0, atol=1e-6)
    over_all = torch.zeros(shape)  # aggregation.merge = "all": the sums over every peer / 4
    for pos, total in sums.items():
        over_all[pos] = total / len(pairs)
    torch.testing.assert_close(codec.decode_mean(idx, vals, shape, over=len(pairs)), over_all, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="at least 1 peer"):
        codec.decode_mean(idx, vals, shape, over=0)
    batch = codec.decode_batch(idx, vals, shape)
    for p, (pi, pv) in enumerate(pairs):
        assert torch.equal(batch[p], codec.decode(pi, pv, shape))


def _wire(codec: SparseLoCoCodec, shape: tuple[int, ...], seed: int = 5) -> dict[str, torch.Tensor]:
    return codec.encode_q(_rand(shape, seed=seed)).pack()


def _refusal(codec: SparseLoCoCodec, parts: dict, shape: tuple[int, ...]) -> PayloadProblem:
    out = codec.decode_payload(parts, shape, "layer.w")
    assert isinstance(out, PayloadProblem), "a hostile payload was accepted"
    assert codec.payload_problem(parts, shape, "layer.w") == out.detail
    return out


def _with_index(wire: dict, position: int, value: int, n: int) -> dict:
    idx, _ = unpack_12bit(wire["idx"], n)
    idx[position] = value
    return {**wire, "idx": pack_12bit(idx)}


def test_hostile_index_outside_the_chunk() -> None:
    codec, shape = SparseLoCoCodec(), (64, 32)  # chunks of 64 x 32 = 2048 elements: 12 bits reach 4095
    wire = _wire(codec, shape)
    assert codec.decode_payload(wire, shape) is not None and codec.payload_problem(wire, shape) is None
    bad = _with_index(wire, 63, 3000, 64)  # the last index of the only chunk
    problem = _refusal(codec, bad, shape)
    assert "index 3000 in chunk 0 is outside [0, 2048)" in problem.detail and not problem.non_finite


def test_hostile_indices_out_of_order_or_repeated() -> None:
    codec, shape = SparseLoCoCodec(chunk=64, topk=8), (128, 64)
    wire = _wire(codec, shape)
    idx, _ = unpack_12bit(wire["idx"], 16)
    swapped = idx.clone()
    swapped[[8, 9]] = idx[[9, 8]]
    assert "chunk 1 lists index" in _refusal(codec, {**wire, "idx": pack_12bit(swapped)}, shape).detail
    repeated = idx.clone()
    repeated[1] = repeated[0]
    assert "strictly ascending" in _refusal(codec, {**wire, "idx": pack_12bit(repeated)}, shape).detail


def test_hostile_padding_after_an_odd_count() -> None:
    codec, shape = SparseLoCoCodec(), (7,)  # 7 kept values: 4 pairs, the last padded
    wire = _wire(codec, shape)
    idx = wire["idx"].clone()
    idx[-1] = 1  # the padding index becomes 16
    assert "padding index after an odd count is 16" in _refusal(codec, {**wire, "idx": idx}, shape).detail
    codes = wire["codes"].clone()
    codes[-1] |= 0b11 << 6  # the 8th code of 7
    assert "padding code(s)" in _refusal(codec, {**wire, "codes": codes}, shape).detail


def test_hostile_level_code_out_of_range() -> None:
    """With 4 levels every 2-bit code is a level; with 3 levels code 3 exists on the wire."""
    codec, shape = SparseLoCoCodec(bins=3), (64, 64)
    wire = _wire(codec, shape)
    codes, _ = unpack_codes(wire["codes"], 64, 2)
    codes[10] = 3
    problem = _refusal(codec, {**wire, "codes": pack_codes(codes, 2)}, shape)
    assert "level code 3 at value 10 is outside [0, 3)" in problem.detail


@pytest.mark.parametrize(("part", "change", "message"), [
    ("idx", lambda t: t[:-3], "'layer.w.idx' is torch.uint8 (93,); expected torch.uint8 (96,)"),
    ("idx", lambda t: torch.cat([t, t[:3]]), "expected torch.uint8 (96,)"),
    ("codes", lambda t: t[:-1], "'layer.w.codes' is torch.uint8 (15,); expected torch.uint8 (16,)"),
    ("qparams", lambda t: t[:5], "'layer.w.qparams' is torch.float32 (5,); expected torch.float32 (6,)"),
    ("qparams", lambda t: t.double(), "torch.float64 (6,)"),
    ("idx", lambda t: t.to(torch.int16), "torch.int16 (96,)"),
])
def test_hostile_wrong_lengths_and_dtypes(part: str, change, message: str) -> None:
    codec, shape = SparseLoCoCodec(), (64, 64)
    wire = _wire(codec, shape)
    problem = _refusal(codec, {**wire, part: change(wire[part])}, shape)
    assert message in problem.detail and not problem.non_finite


def test_hostile_missing_or_extra_parts() -> None:
    codec, shape = SparseLoCoCodec(), (64, 64)
    wire = _wire(codec, shape)
    assert "expected exactly ['idx', 'codes', 'qparams']" in _refusal(codec, {"idx": wire["idx"]}, shape).detail
    assert "has parts" in _refusal(codec, {**wire, "vals": wire["qparams"]}, shape).detail


@pytest.mark.parametrize(("where", "value", "non_finite", "message"), [
    (1, float("nan"), True, "NaN or Inf"),
    (1, float("inf"), True, "NaN or Inf"),
    (0, float("-inf"), True, "NaN or Inf"),
    (3, float("nan"), True, "NaN or Inf"),
    (1, 0.0, False, "scale is 0.0; it must be > 0"),
    (1, -2.0, False, "scale is -2.0; it must be > 0"),
    (0, 3e38, True, "shift + lookup overflows float32"),
])
def test_hostile_quantisation_parameters(where: int, value: float, non_finite: bool, message: str) -> None:
    codec, shape = SparseLoCoCodec(), (64, 64)
    wire = _wire(codec, shape)
    qparams = wire["qparams"].clone()
    qparams[where] = value
    if where == 0 and value > 0:
        qparams[5] = 3e38  # a used level's lookup: together they overflow
    problem = _refusal(codec, {**wire, "qparams": qparams}, shape)
    assert message in problem.detail and problem.non_finite is non_finite


def test_hostile_lookup_for_an_unused_level() -> None:
    codec, shape = SparseLoCoCodec(), (64, 64)
    wire = _wire(codec, shape)
    codes, _ = unpack_codes(wire["codes"], 64, 2)
    unused = next(j for j in range(4) if not bool((codes == j).any()))
    qparams = wire["qparams"].clone()
    qparams[2 + unused] = 0.5
    assert f"lookup[{unused}] is 0.5 but no value uses level {unused}" in \
        _refusal(codec, {**wire, "qparams": qparams}, shape).detail


def test_wire_parts_survive_safetensors_with_the_declared_dtypes() -> None:
    codec, shapes = SparseLoCoCodec(), {"w": (128, 192), "b": (7,)}
    tensors = {f"{n}.{p}": t for n, s in shapes.items() for p, t in _wire(codec, s).items()}
    data = safetensors.torch.save(tensors)
    header = __import__("json").loads(data[8:8 + int.from_bytes(data[:8], "little")])
    for n, s in shapes.items():
        for part, (dtype, shape) in codec.payload_shapes(s).items():
            assert header[f"{n}.{part}"]["dtype"] == dtype and tuple(header[f"{n}.{part}"]["shape"]) == shape
    loaded = safetensors.torch.load(data)
    for n, s in shapes.items():
        out = codec.decode_payload({p: loaded[f"{n}.{p}"] for p in ("idx", "codes", "qparams")}, s, n)
        assert isinstance(out, tuple) and torch.equal(out[1], codec.encode(_rand(s, seed=5))[1])


def test_error_feedback_recurrence() -> None:
    codec = SparseLoCoCodec(chunk=64, topk=16)
    assert codec.ef_decay == EF_DECAY == 0.95
    shape = (64, 128)
    deltas = [_rand(shape, seed=40 + t) for t in range(4)]
    buffers: dict[str, torch.Tensor] = {}
    e = torch.zeros(shape)
    sent: list[torch.Tensor] = []
    for d in deltas:
        q = codec.feedback_step(buffers, {"w": d})["w"]
        e = 0.95 * e + d
        idx, vals = codec.encode(e)
        assert torch.equal(q.idx, idx) and torch.equal(q.vals, vals)
        e = e - codec.decode(idx, vals, shape)
        torch.testing.assert_close(buffers["w"], e, rtol=0, atol=1e-6)
        sent.append(codec.decode(idx, vals, shape))
    # nothing is lost, only delayed: e_T + sum_t 0.95^(T-t) sent_t = sum_t 0.95^(T-t) delta_t
    weights = [0.95 ** (len(deltas) - 1 - t) for t in range(len(deltas))]
    lhs = buffers["w"] + sum(w * s for w, s in zip(weights, sent, strict=True))
    torch.testing.assert_close(lhs, sum(w * d for w, d in zip(weights, deltas, strict=True)), rtol=0, atol=1e-5)
    assert buffers["w"].abs().max() > 0.1  # the buffer holds a real residual, not zero


def test_defaults_are_the_reference_settings() -> None:
    """templar v2.1.28 hparams: topk_compression 64, target_chunk 64, quantization_bins 4,
    quantization_range 6, momentum_decay 0.95; every validator must agree on them."""
    codec = SparseLoCoCodec()
    assert (codec.chunk, codec.topk, codec.bins, codec.range_sigmas, codec.ef_decay, codec.bits) == \
        (64, 64, 4, 6.0, 0.95, 2)
    assert codec.kind == "sparseloco"
    assert codec.payload_shapes((4096, 128)) == {"idx": ("U8", (128 * 64 * 3 // 2,)),
                                                  "codes": ("U8", (128 * 64 // 4,)), "qparams": ("F32", (6,))}


def test_aggregation_takes_the_codec_in_place_of_the_dct_one() -> None:
    codec, shapes = SparseLoCoCodec(chunk=64, topk=8), {"w": (64, 128), "b": (100,)}
    peers = [codec.encode_all({n: _rand(s, seed=60 + p) for n, s in shapes.items()}) for p in range(3)]
    delta = aggregate(codec, peers, shapes)
    for name, shape in shapes.items():
        unit = [(i, v / torch.linalg.vector_norm(v)) for i, v in (peer[name] for peer in peers)]
        expected = codec.decode_mean(torch.stack([i for i, _ in unit]), torch.stack([v for _, v in unit]), shape)
        torch.testing.assert_close(delta[name], expected, rtol=1e-6, atol=1e-7)
        assert int((delta[name] != 0).sum()) >= 8 * codec.layout(shape).n_chunks


def test_constructor_refuses_settings_the_format_cannot_hold() -> None:
    with pytest.raises(ValueError, match="use chunk <= 64"):
        SparseLoCoCodec(chunk=65)
    with pytest.raises(ValueError, match=r"bins must be in \[2, 256\]"):
        SparseLoCoCodec(bins=1)
    with pytest.raises(ValueError, match="ef_decay"):
        SparseLoCoCodec(ef_decay=1.5)
    with pytest.raises(ValueError, match="range_sigmas"):
        SparseLoCoCodec(range_sigmas=float("nan"))
    with pytest.raises(ValueError, match="NaN or Inf"):
        SparseLoCoCodec().encode(torch.tensor([1.0, float("nan")]))


GOLDEN_SHA256 = "a2273f309cef82bf5b1c05bc7d0153d89081050a3464b7ac536d6ec86e4dea56"


def test_golden_wire_bytes() -> None:
    """Integer inputs keep the mean and the bin sums exact whatever the summation order, so these
    bytes are the format itself: a change of packing, quantisation or selection changes the hash."""
    gen = torch.Generator().manual_seed(2026)
    tensors = {"w": torch.randint(-50, 51, (8, 16), generator=gen).float(),
               "b": torch.randint(-50, 51, (7,), generator=gen).float()}
    codec = SparseLoCoCodec(chunk=4, topk=3)
    digest = hashlib.sha256()
    for name in sorted(tensors):
        wire = codec.encode_q(tensors[name]).pack()
        for part in ("idx", "codes", "qparams"):
            digest.update(wire[part].numpy().tobytes())
    assert digest.hexdigest() == GOLDEN_SHA256


@pytest.mark.gpu
def test_cuda_encoding_matches_cpu() -> None:
    codec = SparseLoCoCodec()
    x = _rand((256, 192), seed=8)
    q, gq = codec.encode_q(x), codec.encode_q(x.cuda())
    assert gq.idx.is_cuda and torch.equal(gq.idx.cpu(), q.idx) and torch.equal(gq.codes.cpu(), q.codes)
    torch.testing.assert_close(gq.qparams.cpu(), q.qparams, rtol=1e-6, atol=0)
    assert codec.decode_mean(gq.idx.unsqueeze(0), gq.vals.unsqueeze(0), x.shape).is_cuda
