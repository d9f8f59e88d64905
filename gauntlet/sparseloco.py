"""SparseLoCo codec: top-k per chunk with no transform, 2-bit values, 12-bit packed indices.

The reference's later pseudo-gradients (templar v2.1.28: `use_dct: false`, `topk_compression:
64`, `target_chunk: 64`, `quantization_bins: 4`, `quantization_range: 6`, `momentum_decay: 0.95`),
restated here from its definitions:

- Chunks are those of gauntlet.codec (per dimension the largest divisor <= chunk), top-k of |x|
  inside each chunk of the raw tensor, indices row-major inside the chunk, ascending, ties to the
  lower index: one canonical encoding, so byte-identical copies stay byte-identical.
- Quantisation is per TENSOR, over all its kept values at once (the reference quantises the whole
  (y, x, k) value tensor): shift = mean, c = v - shift, sigma = ||c|| / sqrt(n - 1),
  scale = range_sigmas * sigma / bins (1.5 sigma for 4 bins over 6 sigma; 1.0 when that is zero
  or not finite), code = clamp(round(c / scale + bins // 2), 0, bins - 1). The decoder does not
  use bin centres: code j decodes to shift + lookup[j], lookup[j] being the mean of the centred
  values that fell in bin j (0 for an empty bin), which minimises the squared error for that
  partition. Stored per tensor: float32 `qparams = [shift, scale, lookup[0..bins-1]]`; scale is
  kept for audit only. The levels are asymmetric: for 4 bins the bin centres are -3, -1.5, 0 and
  +1.5 sigma, and code 3 takes everything above +0.75 sigma.
- Error feedback: e = decay * e + delta; send q(e); e -= decode(q(e)) (what was really sent).

Wire format of one tensor of n = n_chunks * k kept values: `idx`, pairs of 12-bit indices as the
24-bit little-endian integer a + 4096 * b in 3 bytes (an odd count is padded with a zero index);
`codes`, `8 // bits` codes per byte, the first in the lowest bits, padding codes zero; `qparams`.
The reference stores one code per byte; packing them is what makes the values 2 bits.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gauntlet.codec import Layout, _check_sparse, _positions, _to_chunks, _topk_canonical, layout, scatter_mean

KIND = "sparseloco"
INDEX_BITS = 12
MAX_CHUNK_ELEMS = 1 << INDEX_BITS
EF_DECAY = 0.95
"""The reference's `momentum_decay` of the error-feedback buffer."""
PARTS = ("idx", "codes", "qparams")


def code_bits(bins: int) -> int:
    """Bits per level code: the smallest of 1, 2, 4, 8 that holds `bins` levels (bytes stay whole)."""
    if not 2 <= bins <= 256:
        raise ValueError(f"bins must be in [2, 256], got {bins}")
    return next(b for b in (1, 2, 4, 8) if 1 << b >= bins)


def packed_12bit_len(n: int) -> int:
    return 3 * ((n + 1) // 2)


def packed_codes_len(n: int, bits: int) -> int:
    per = 8 // bits
    return (n + per - 1) // per


def pack_12bit(idx: Tensor) -> Tensor:
    """Integer indices in [0, 4096), any shape -> uint8 (3 * ceil(n / 2),), flattened row-major."""
    flat = idx.reshape(-1).to(torch.int32)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= MAX_CHUNK_ELEMS):
        raise ValueError(f"12-bit indices must lie in [0, {MAX_CHUNK_ELEMS}), "
                         f"got [{int(flat.min())}, {int(flat.max())}]")
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    word = flat[0::2] | (flat[1::2] << INDEX_BITS)  # (n/2,) 24-bit
    return torch.stack([word & 0xFF, (word >> 8) & 0xFF, word >> 16], dim=1).to(torch.uint8).reshape(-1)


def unpack_12bit(packed: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """uint8 (3 * ceil(n / 2),) -> (indices int64 (n,), the padding index: () int64, 0 if honest)."""
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != packed_12bit_len(n):
        raise ValueError(f"packed 12-bit indices must be uint8 ({packed_12bit_len(n)},) for {n} indices, "
                         f"got {packed.dtype} {tuple(packed.shape)}")
    b = packed.to(torch.int64).view(-1, 3)
    word = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)  # (ceil(n/2),)
    both = torch.stack([word & (MAX_CHUNK_ELEMS - 1), word >> INDEX_BITS], dim=1).reshape(-1)
    return both[:n], both[n:].sum()


def pack_codes(codes: Tensor, bits: int) -> Tensor:
    """Level codes < 2**bits, any shape -> uint8 (ceil(n * bits / 8),), first code in the low bits."""
    per = 8 // bits
    flat = codes.reshape(-1).to(torch.int32)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= 1 << bits):
        raise ValueError(f"{bits}-bit codes must lie in [0, {1 << bits}), got [{int(flat.min())}, {int(flat.max())}]")
    flat = torch.cat([flat, flat.new_zeros((-flat.numel()) % per)])
    shifts = torch.arange(per, device=flat.device, dtype=torch.int32) * bits
    return (flat.view(-1, per) << shifts).sum(dim=1).to(torch.uint8)


def unpack_codes(packed: Tensor, n: int, bits: int) -> tuple[Tensor, Tensor]:
    """uint8 packed codes -> (codes int64 (n,), the padding codes (pad,) int64, all 0 if honest)."""
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != packed_codes_len(n, bits):
        raise ValueError(f"packed {bits}-bit codes must be uint8 ({packed_codes_len(n, bits)},) for {n} values, "
                         f"got {packed.dtype} {tuple(packed.shape)}")
    shifts = torch.arange(8 // bits, device=packed.device, dtype=torch.int64) * bits
    every = ((packed.to(torch.int64).unsqueeze(1) >> shifts) & ((1 << bits) - 1)).reshape(-1)
    return every[:n], every[n:]


def quantize(vals: Tensor, bins: int, range_sigmas: float) -> tuple[Tensor, Tensor]:
    """Kept values (any shape) -> (codes int64 (same shape), qparams float32 (2 + bins,)).

    shift and scale are rounded to float32 before use, so the stored parameters are exactly the
    ones that chose the codes. Statistics are taken in float64 (a float32 sum of a large tensor's
    values would depend on the summation order more than on the data).
    """
    v = vals.detach().to(torch.float64)
    n = v.numel()
    shift = v.mean().to(torch.float32).to(torch.float64)
    c = v - shift
    sigma = torch.linalg.vector_norm(c) / math.sqrt(max(n - 1, 1))
    scale = (range_sigmas * sigma / bins).to(torch.float32).to(torch.float64)
    if not (bool(torch.isfinite(scale)) and float(scale) > 0):
        scale = torch.ones((), dtype=torch.float64, device=v.device)
    codes = torch.round(c / scale + bins // 2).clamp_(0, bins - 1).to(torch.int64)
    sums = torch.zeros(bins, dtype=torch.float64, device=v.device).index_add_(0, codes.flatten(), c.flatten())
    counts = torch.bincount(codes.flatten(), minlength=bins)
    lookup = torch.where(counts > 0, sums / counts.clamp(min=1), torch.zeros_like(sums))
    return codes, torch.cat([shift.view(1), scale.view(1), lookup]).to(torch.float32)


def dequantize(codes: Tensor, qparams: Tensor) -> Tensor:
    """float32 values shift + lookup[code], in the shape of `codes`."""
    return qparams[2:][codes.to(torch.int64)] + qparams[0]


@dataclass(frozen=True)
class Quantized:
    """One tensor's encoding before packing: idx int64 (C, k), codes int64 (C, k), qparams (2 + bins,)."""

    idx: Tensor
    codes: Tensor
    qparams: Tensor
    bits: int

    @property
    def vals(self) -> Tensor:
        """float32 (C, k): the values a decoder gets, which error feedback must subtract."""
        return dequantize(self.codes, self.qparams)

    def __iter__(self) -> Iterator[Tensor]:
        """Unpacks as the pair (idx, vals) every stage takes, while the writer can still pack the
        miner's own codes: re-quantising dequantised values need not give the same levels."""
        return iter((self.idx, self.vals))

    def pack(self) -> dict[str, Tensor]:
        """The wire tensors {idx, codes, qparams} on the CPU (uint8, uint8, float32)."""
        return {"idx": pack_12bit(self.idx).cpu(), "codes": pack_codes(self.codes, self.bits).cpu(),
                "qparams": self.qparams.detach().to("cpu", torch.float32).contiguous()}


@dataclass(frozen=True)
class PayloadProblem:
    """Why a peer's packed tensor was refused; `non_finite` marks NaN/Inf (a NON_FINITE verdict)."""

    detail: str
    non_finite: bool = False


class SparseLoCoCodec:
    """Top-k per chunk of the raw tensor, quantised; the same encode/decode interface as DCTCodec."""

    kind = KIND

    def __init__(self, chunk: int = 64, topk: int = 64, bins: int = 4, range_sigmas: float = 6.0,
                 ef_decay: float = EF_DECAY) -> None:
        if chunk < 1 or topk < 1:
            raise ValueError(f"chunk and topk must be >= 1, got chunk={chunk}, topk={topk}")
        if chunk * chunk > MAX_CHUNK_ELEMS:
            raise ValueError(f"chunk {chunk} gives {chunk * chunk} elements per 2-D chunk, more than "
                             f"{INDEX_BITS}-bit indices address ({MAX_CHUNK_ELEMS}); use chunk <= 64")
        if not (math.isfinite(range_sigmas) and range_sigmas > 0):
            raise ValueError(f"range_sigmas must be a finite number > 0, got {range_sigmas}")
        if not 0 <= ef_decay <= 1:
            raise ValueError(f"ef_decay must be in [0, 1], got {ef_decay}")
        self.chunk, self.topk, self.bins = chunk, topk, bins
        self.range_sigmas, self.ef_decay = float(range_sigmas), float(ef_decay)
        self.bits = code_bits(bins)

    def __repr__(self) -> str:
        return (f"SparseLoCoCodec(chunk={self.chunk}, topk={self.topk}, bins={self.bins}, "
                f"range_sigmas={self.range_sigmas}, ef_decay={self.ef_decay})")

    def layout(self, shape: Sequence[int]) -> Layout:
        return layout(shape, self.chunk, self.topk)

    def encode_q(self, x: Tensor) -> Quantized:
        """The k largest |x| of each chunk, their indices and level codes (see the module docstring)."""
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise ValueError(f"encode needs a floating-point tensor, got {type(x).__name__} {getattr(x, 'dtype', '')}")
        lay = self.layout(x.shape)
        chunks = _to_chunks(x.detach().to(torch.float64 if x.dtype == torch.float64 else torch.float32), lay)
        idx = _topk_canonical(chunks.abs(), lay.k)  # (C, k)
        kept = chunks.gather(-1, idx)  # (C, k)
        if not bool(torch.isfinite(kept).all()):
            raise ValueError(f"tensor of shape {lay.shape} has NaN or Inf among its largest values")
        codes, qparams = quantize(kept, self.bins, self.range_sigmas)
        return Quantized(idx, codes, qparams.to(x.device), self.bits)

    def quantize_pair(self, idx: Tensor, vals: Tensor) -> Quantized:
        """Given (idx, vals) (C, k), e.g. a transformed update -> its encoding with fresh levels."""
        if idx.dim() != 2 or idx.shape != vals.shape:
            raise ValueError(f"idx and vals must both be (n_chunks, k); got {tuple(idx.shape)}, {tuple(vals.shape)}")
        if not bool(torch.isfinite(vals).all()):
            raise ValueError("vals hold NaN or Inf; they have no quantisation levels")
        codes, qparams = quantize(vals, self.bins, self.range_sigmas)
        return Quantized(idx.to(torch.int64), codes, qparams.to(vals.device), self.bits)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """-> (idx int64 (C, k), vals float32 (C, k)), vals already quantised as a decoder sees them."""
        q = self.encode_q(x)
        return q.idx, q.vals

    def decode(self, idx: Tensor, vals: Tensor, shape: Sequence[int]) -> Tensor:
        return self.decode_batch(idx.unsqueeze(0), vals.unsqueeze(0), shape)[0]

    def decode_batch(self, idx: Tensor, vals: Tensor, shape: Sequence[int]) -> Tensor:
        """idx, vals (P, C, k) -> (P, *shape) float32, one scatter (no inverse transform to run)."""
        lay = self.layout(shape)
        idx, vals, scale = _check_sparse(idx, vals, lay, per_peer=True)
        dense = torch.zeros(idx.shape[0], *lay.shape, dtype=torch.float32, device=idx.device)
        dense.view(-1).index_add_(0, _positions(idx, lay, per_peer=True).flatten(), vals.flatten())
        return dense if scale is None else dense.mul_(scale.view(-1, *[1] * len(lay.shape)))

    def decode_mean(self, idx: Tensor, vals: Tensor, shape: Sequence[int], over: int | None = None) -> Tensor:
        """idx, vals (P, C, k) -> (*shape): per position, the mean over the peers that chose it
        (with `over`: the sum over them divided by `over`, the mean of all peers' updates)."""
        sums, scale = scatter_mean(idx, vals, self.layout(shape), over)
        return sums if scale is None else sums.mul_(scale)

    def encode_all(self, tensors: Mapping[str, Tensor]) -> dict[str, tuple[Tensor, Tensor]]:
        return {name: self.encode(t) for name, t in tensors.items()}

    def decode_all(self, c: Mapping[str, tuple[Tensor, Tensor]],
                   shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Tensor]:
        missing = sorted(set(c) - set(shapes))
        if missing:
            raise ValueError(f"no shape given for compressed tensors {missing}")
        return {name: self.decode(idx, vals, shapes[name]) for name, (idx, vals) in c.items()}

    def feedback_step(self, buffers: MutableMapping[str, Tensor], delta: Mapping[str, Tensor]) -> dict[str, Quantized]:
        """In place e = ef_decay * e + delta (e = delta where none yet), send q(e), e -= decode(q(e)).

        What is subtracted is the dequantised update, so the quantisation error also feeds back.
        """
        out: dict[str, Quantized] = {}
        with torch.no_grad():
            for name, d in delta.items():
                e = buffers.get(name)
                if e is None:
                    e = buffers[name] = d.detach().clone()
                else:
                    e.mul_(self.ef_decay).add_(d)
                out[name] = q = self.encode_q(e)
                e.sub_(self.decode(q.idx, q.vals, e.shape).to(e.dtype))
        return out

    def payload_shapes(self, shape: Sequence[int]) -> dict[str, tuple[str, tuple[int, ...]]]:
        """Safetensors dtype and shape of each wire part of a tensor of `shape` (for header checks)."""
        lay = self.layout(shape)
        n = lay.n_chunks * lay.k
        return {"idx": ("U8", (packed_12bit_len(n),)), "codes": ("U8", (packed_codes_len(n, self.bits),)),
                "qparams": ("F32", (2 + self.bins,))}

    def decode_payload(self, parts: Mapping[str, Tensor], shape: Sequence[int],
                       name: str = "") -> tuple[Tensor, Tensor] | PayloadProblem:
        """A peer's wire parts -> (idx int64 (C, k), vals float32 (C, k)), or why they are refused."""
        lay = self.layout(shape)
        try:
            _check_parts(parts, self.payload_shapes(shape), name)
            _check_qparams(parts["qparams"], name)
            idx = _checked_idx(parts["idx"], lay, name)
            codes = _checked_codes(parts["codes"], parts["qparams"], lay.n_chunks * lay.k, self, name)
        except _Refused as exc:
            return exc.problem
        return idx, dequantize(codes.view(lay.n_chunks, lay.k), parts["qparams"].to(torch.float32))

    def payload_problem(self, parts: Mapping[str, Tensor], shape: Sequence[int], name: str = "") -> str | None:
        """The message of decode_payload's refusal, or None when the parts are sound."""
        out = self.decode_payload(parts, shape, name)
        return out.detail if isinstance(out, PayloadProblem) else None


class _Refused(Exception):
    def __init__(self, detail: str, non_finite: bool = False) -> None:
        super().__init__(detail)
        self.problem = PayloadProblem(detail, non_finite)


_DTYPES = {"U8": torch.uint8, "F32": torch.float32}


def _check_parts(parts: Mapping[str, Tensor], want: Mapping[str, tuple[str, tuple[int, ...]]], name: str) -> None:
    if set(parts) != set(PARTS):
        raise _Refused(f"'{name}' has parts {sorted(parts)}; expected exactly {list(PARTS)}")
    for part, (dtype, shape) in want.items():
        t = parts[part]
        if not isinstance(t, Tensor) or t.dtype != _DTYPES[dtype] or tuple(t.shape) != shape:
            got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
            raise _Refused(f"'{name}.{part}' is {got}; expected {_DTYPES[dtype]} {shape}")


def _check_qparams(qparams: Tensor, name: str) -> None:
    shift, scale, lookup = qparams[0], qparams[1], qparams[2:]
    if not bool(torch.isfinite(qparams).all()):
        raise _Refused(f"'{name}.qparams' holds NaN or Inf (shift {float(shift)}, scale {float(scale)}, "
                       f"lookup {lookup.tolist()})", non_finite=True)
    if not float(scale) > 0:
        raise _Refused(f"'{name}.qparams': scale is {float(scale)}; it must be > 0")
    if not bool(torch.isfinite(lookup + shift).all()):
        raise _Refused(f"'{name}.qparams': shift + lookup overflows float32", non_finite=True)


def _checked_idx(packed: Tensor, lay: Layout, name: str) -> Tensor:
    idx, pad = unpack_12bit(packed, lay.n_chunks * lay.k)
    if int(pad) != 0:
        raise _Refused(f"'{name}.idx': the padding index after an odd count is {int(pad)}; it must be 0")
    idx = idx.view(lay.n_chunks, lay.k)
    bad = idx >= lay.chunk_elems
    if bool(bad.any()):
        chunk, col = (int(v) for v in bad.nonzero()[0])
        raise _Refused(f"'{name}.idx': index {int(idx[chunk, col])} in chunk {chunk} is outside "
                       f"[0, {lay.chunk_elems}) ({int(bad.sum())} such)")
    unordered = idx[:, 1:] <= idx[:, :-1]  # (C, k-1)
    if bool(unordered.any()):
        chunk, col = (int(v) for v in unordered.nonzero()[0])
        raise _Refused(f"'{name}.idx': chunk {chunk} lists index {int(idx[chunk, col])} before "
                       f"{int(idx[chunk, col + 1])}; indices must be strictly ascending (no repeats)")
    return idx


def _checked_codes(packed: Tensor, qparams: Tensor, n: int, codec: SparseLoCoCodec, name: str) -> Tensor:
    codes, pad = unpack_codes(packed, n, codec.bits)
    bad = codes >= codec.bins
    if bool(bad.any()):
        pos = int(bad.nonzero()[0, 0])
        raise _Refused(f"'{name}.codes': level code {int(codes[pos])} at value {pos} is outside [0, {codec.bins})")
    if bool(pad.any()):
        raise _Refused(f"'{name}.codes': the {pad.numel()} padding code(s) after the last value must be 0")
    stray = (torch.bincount(codes, minlength=codec.bins) == 0) & (qparams[2:] != 0)
    if bool(stray.any()):
        level = int(stray.nonzero()[0, 0])
        raise _Refused(f"'{name}.qparams': lookup[{level}] is {float(qparams[2 + level])} but no value "
                       f"uses level {level}; an honest encoder writes 0 there")
    return codes
