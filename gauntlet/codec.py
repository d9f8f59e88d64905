"""DCT-II top-k codec of pseudo-gradients (DeMo style), shared by miners and the validator.

A tensor is cut into chunks (blocks of a matrix, pieces of a vector); each chunk goes through an
orthonormal DCT-II and keeps its `k` coefficients of largest magnitude. Because the basis is
orthonormal, the energy lost by a round trip is exactly the energy of the dropped coefficients.

Layout of the coefficients, fixed because files and the validator must agree on it: chunks are
numbered in row-major order of the block grid; an index is the row-major position of a
coefficient inside its chunk's (cr, cc) block (or (cn,) piece), so chunk 64 gives indices < 4096,
which fit int16. Indices are sorted ascending within a chunk, and among coefficients of equal
magnitude at the cut the lower index wins, so an encoding is canonical on any device.

The transforms are matrix products with cached bases applied to all chunks of a tensor at once,
and decoding many peers is one scatter, as DESIGN.md's performance notes ask.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from gauntlet.config import CodecConfig

_SLAB_ELEMS = 1 << 20
"""Elements per inverse transform in decode_batch (4 MiB of float32)."""
_SAFE_ABS = 2.0**40
"""Below this |value| no float32 sum of a decode can overflow (4096 coefficients per chunk and
thousands of peers stay under 1e20); above it decoding scales by a power of two first."""

Compressed = dict[str, tuple[Tensor, Tensor]]
"""Tensor name -> (idx int64 (n_chunks, k), vals float32 (n_chunks, k))."""


@dataclass(frozen=True)
class Layout:
    """How one tensor is chunked: `block` tiles `shape` exactly, `k` coefficients kept per chunk."""

    shape: tuple[int, ...]
    block: tuple[int, ...]
    n_chunks: int
    chunk_elems: int
    k: int


def _edge(dim: int, chunk: int) -> int:
    """Largest divisor of `dim` that is <= `chunk` (so chunks tile the dimension exactly)."""
    for edge in range(min(dim, chunk), 0, -1):
        if dim % edge == 0:
            return edge
    raise AssertionError("unreachable: 1 divides every dimension")


def layout(shape: Sequence[int], chunk: int, topk: int) -> Layout:
    """How a tensor of `shape` is chunked; only 1-D and 2-D tensors exist in a LLaMA."""
    shape = tuple(int(d) for d in shape)
    if len(shape) not in (1, 2):
        raise ValueError(f"the DCT codec handles 1-D and 2-D tensors only, got shape {shape}")
    if any(d < 1 for d in shape):
        raise ValueError(f"every dimension must be >= 1, got shape {shape}")
    if chunk < 1 or topk < 1:
        raise ValueError(f"chunk and topk must be >= 1, got chunk={chunk}, topk={topk}")
    block = tuple(_edge(d, chunk) for d in shape)
    chunk_elems = math.prod(block)
    n_chunks = math.prod(shape) // chunk_elems
    return Layout(shape, block, n_chunks, chunk_elems, min(topk, chunk_elems))


@functools.lru_cache(maxsize=64)
def _basis(n: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Orthonormal DCT-II matrix D (n, n): coefficients are D @ x, and D.T inverts it."""
    freq = torch.arange(n, dtype=torch.float64).unsqueeze(1)  # (n, 1)
    pos = torch.arange(n, dtype=torch.float64).unsqueeze(0)  # (1, n)
    d = torch.cos(math.pi * (2 * pos + 1) * freq / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.to(device=device, dtype=dtype)


def _to_chunks(x: Tensor, lay: Layout) -> Tensor:
    """(*shape) -> (n_chunks, chunk_elems), chunks in row-major order of the block grid."""
    if len(lay.block) == 1:
        return x.reshape(lay.n_chunks, lay.chunk_elems)
    (r, c), (br, bc) = lay.shape, lay.block
    return x.reshape(r // br, br, c // bc, bc).permute(0, 2, 1, 3).reshape(lay.n_chunks, lay.chunk_elems)


def _positions(idx: Tensor, lay: Layout, per_peer: bool) -> Tensor:
    """Flat positions of the coefficients idx (P, C, k) name, in a (P, *shape) tensor when
    `per_peer`, else all peers in one (*shape) tensor.

    Scattering straight into the tensor's own layout (not chunk by chunk) lets both transforms
    run in place of the layout, so decoding needs no permuted copy of P dense tensors.
    """
    peers = idx.shape[0]
    numel = math.prod(lay.shape)
    chunk = torch.arange(lay.n_chunks, device=idx.device)  # (C,)
    if len(lay.block) == 1:
        base = chunk * lay.chunk_elems
        inside = idx
    else:
        (_, c), (br, bc) = lay.shape, lay.block
        base = (chunk // (c // bc)) * (br * c) + (chunk % (c // bc)) * bc
        inside = (idx // bc) * c + idx % bc
    pos = inside + base.view(1, -1, 1)  # (P, C, k)
    if per_peer:
        pos += torch.arange(peers, device=idx.device).view(-1, 1, 1) * numel
    return pos


def _transform(x: Tensor, lay: Layout, inverse: bool, scratch: bool = False) -> Tensor:
    """Blockwise DCT-II (or its inverse) of a batch (B, *shape), in the tensor's own layout.

    A block's transform is `D_r @ X @ D_c.T`; the right factor acts on each row segment of
    `bc` contiguous elements (one GEMM over all of them), the left factor on each band of
    `br` rows (one batched GEMM over the bands). Inverse: `D_r.T @ Y @ D_c`. With `scratch`
    the result overwrites `x` (a buffer the caller owns), sparing one fresh (B, *shape)
    allocation: on a CPU, first-touching P dense tensors costs as much as the products.
    """
    batch = x.shape[0]
    bases = [_basis(n, x.device, x.dtype) for n in lay.block]
    dc = bases[-1] if inverse else bases[-1].T
    rows = (x.reshape(-1, lay.block[-1]) @ dc).view(batch, *lay.shape)  # (B, *shape)
    if len(bases) == 1:
        return x.copy_(rows) if scratch else rows
    (r, c), br = lay.shape, lay.block[0]
    dr = bases[0].T if inverse else bases[0]
    bands = (batch * (r // br), br, c)
    out = x.view(bands) if scratch else None
    return torch.matmul(dr, rows.view(bands), out=out).view(batch, r, c)  # (B, r, c)


def _topk_canonical(mag: Tensor, k: int) -> Tensor:
    """Indices (C, k) of the k largest magnitudes per row, ascending; lower index wins ties.

    torch.topk leaves ties at the cut unspecified (and device dependent), so when a row has a
    tie there, the rows are resolved by rank: everything above the cut, then the lowest-indexed
    equals. The tie check costs one comparison; exact ties are rare outside constructed inputs.
    """
    idx = torch.topk(mag, k, dim=-1, sorted=False).indices  # (C, k)
    cut = mag.gather(-1, idx).amin(dim=-1, keepdim=True)  # (C, 1)
    if not bool(((mag >= cut).sum(dim=-1) > k).any()):
        return idx.sort(dim=-1).values
    above = mag > cut
    equal = mag == cut
    room = k - above.sum(dim=-1, keepdim=True)
    keep = above | (equal & (equal.cumsum(dim=-1) <= room))  # exactly k per row
    return keep.nonzero()[:, 1].reshape(mag.shape[0], k)


class Codec(Protocol):
    """What the validator's stages need of a codec: a layout and (idx, vals) in, dense tensors out.

    Both codecs chunk a tensor the same way (`layout`) and hand every stage (idx, vals) pairs, so
    the scorer, the copy check and aggregation never ask which kind wrote a file; only the file
    format (gauntlet/submission.py) and the miner's feedback loop (gauntlet/miner.py) do.
    """

    kind: str
    chunk: int
    topk: int

    def layout(self, shape: Sequence[int]) -> Layout: ...

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]: ...

    def decode(self, idx: Tensor, vals: Tensor, shape: Sequence[int]) -> Tensor: ...

    def decode_batch(self, idx: Tensor, vals: Tensor, shape: Sequence[int]) -> Tensor: ...

    def decode_mean(self, idx: Tensor, vals: Tensor, shape: Sequence[int], over: int | None = None) -> Tensor: ...

    def encode_all(self, tensors: Mapping[str, Tensor]) -> Compressed: ...

    def decode_all(self, c: Compressed, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Tensor]: ...


def make_codec(cfg: CodecConfig) -> Codec:
    """The codec `cfg.kind` names, with its consensus settings: the one place codecs are built."""
    if cfg.kind == "dct":
        return DCTCodec(chunk=cfg.chunk, topk=cfg.topk)
    if cfg.kind == "sparseloco":
        from gauntlet.sparseloco import SparseLoCoCodec  # it imports this module's chunking

        return SparseLoCoCodec(chunk=cfg.chunk, topk=cfg.topk, bins=cfg.bins, range_sigmas=cfg.range_sigmas,
                               ef_decay=cfg.ef_decay)
    raise ValueError(f"unknown codec kind {cfg.kind!r}; choose dct or sparseloco")


class DCTCodec:
    """Encode and decode pseudo-gradients; `chunk` and `topk` are consensus values (CodecConfig)."""

    kind = "dct"

    def __init__(self, chunk: int = 64, topk: int = 32) -> None:
        if chunk < 1 or topk < 1:
            raise ValueError(f"chunk and topk must be >= 1, got chunk={chunk}, topk={topk}")
        self.chunk = chunk
        self.topk = topk

    @classmethod
    def from_config(cls, cfg: CodecConfig) -> DCTCodec:
        if cfg.kind != cls.kind:
            raise ValueError(f"codec.kind is {cfg.kind!r}, not 'dct'; build codecs with make_codec(cfg.codec)")
        return cls(chunk=cfg.chunk, topk=cfg.topk)

    def __repr__(self) -> str:
        return f"DCTCodec(chunk={self.chunk}, topk={self.topk})"

    def layout(self, shape: Sequence[int]) -> Layout:
        return layout(shape, self.chunk, self.topk)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """-> (idx int64 (n_chunks, k), vals float32 (n_chunks, k)) on x's device.

        Half-precision inputs are transformed in float32 (a bf16 DCT would lose the small
        coefficients that decide the top-k); float64 stays float64 until the values are stored.
        """
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise ValueError(f"encode needs a floating-point tensor, got {type(x).__name__} {getattr(x, 'dtype', '')}")
        lay = self.layout(x.shape)
        work = torch.float64 if x.dtype == torch.float64 else torch.float32
        coef = _to_chunks(_transform(x.detach().to(work).unsqueeze(0), lay, inverse=False)[0], lay)  # (C, E)
        idx = _topk_canonical(coef.abs(), lay.k)  # (C, k)
        return idx, coef.gather(-1, idx).to(torch.float32)

    def decode(self, idx: Tensor, vals: Tensor, shape: Sequence[int]) -> Tensor:
        """Dense float32 tensor of `shape` on idx's device: the IDCT of the kept coefficients."""
        return self.decode_batch(idx.unsqueeze(0), vals.unsqueeze(0), shape)[0]

    def decode_batch(self, idx: Tensor, vals: Tensor, shape: Sequence[int]) -> Tensor:
        """idx, vals (P, C, k) -> (P, *shape): every peer's dense tensor, with one scatter.

        The inverse transform then runs over slabs of peers of about `_SLAB_ELEMS` elements:
        small tensors go in one product, large ones a peer at a time, so the working set stays
        cache-sized on a CPU (measured in benchmarks/bench_codec.py) while a GPU still gets
        products of a million elements or more. Any finite values decode without NaN; an
        element whose true value lies beyond float32's range comes out as +-inf (its sign kept).
        """
        lay = self.layout(shape)
        idx, vals, scale = _check_sparse(idx, vals, lay, per_peer=True)
        dense = torch.zeros(idx.shape[0], *lay.shape, dtype=torch.float32, device=idx.device)  # (P, *shape)
        dense.view(-1).index_add_(0, _positions(idx, lay, per_peer=True).flatten(), vals.flatten())
        step = max(1, _SLAB_ELEMS // math.prod(lay.shape))
        for start in range(0, dense.shape[0], step):
            _transform(dense[start : start + step], lay, inverse=True, scratch=True)
        if scale is not None:
            dense.mul_(scale.view(-1, *[1] * len(lay.shape)))
        return dense

    def decode_mean(self, idx: Tensor, vals: Tensor, shape: Sequence[int], over: int | None = None) -> Tensor:
        """idx, vals (P, C, k) -> (*shape): IDCT of the per-index mean over the peers that chose it.

        An index no peer chose stays zero (it is not averaged with zeros), which is the
        reference's scatter-mean. With `over` (the number of peers, aggregation.merge = "all") the
        per-index sums are divided by it instead: the mean of the peers' decoded updates. A peer
        listing an index twice counts twice; stage 1 is where such files are refused.
        """
        lay = self.layout(shape)
        sums, scale = scatter_mean(idx, vals, lay, over)  # the per-index mean (or sum / over), zero where none chose
        out = _transform(sums.unsqueeze(0), lay, inverse=True, scratch=True)[0]
        return out if scale is None else out.mul_(scale)

    def encode_all(self, tensors: Mapping[str, Tensor]) -> Compressed:
        return {name: self.encode(t) for name, t in tensors.items()}

    def decode_all(self, c: Compressed, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Tensor]:
        missing = sorted(set(c) - set(shapes))
        if missing:
            raise ValueError(f"no shape given for compressed tensors {missing}")
        return {name: self.decode(idx, vals, shapes[name]) for name, (idx, vals) in c.items()}


def scatter_mean(idx: Tensor, vals: Tensor, lay: Layout, over: int | None = None) -> tuple[Tensor, Tensor | None]:
    """idx, vals (P, C, k) -> (the per-position mean over the peers that chose it, in the layout's
    chunked shape; the common scale to multiply it by, or None). One scatter for all peers; a
    position nobody chose stays zero. With `over`, the sums are divided by it (every peer)
    instead of by the peers that chose the position. Shared by every codec's `decode_mean`."""
    idx, vals, scale = _check_sparse(idx, vals, lay, per_peer=False)
    flat = _positions(idx, lay, per_peer=False).flatten()  # (P*C*k,)
    sums = torch.zeros(lay.shape, dtype=torch.float32, device=idx.device)
    sums.view(-1).index_add_(0, flat, vals.flatten())
    if over is not None:
        if over < 1:
            raise ValueError(f"over must be at least 1 peer, got {over}")
        return sums.div_(over), scale
    counts = torch.zeros(lay.shape, dtype=torch.float32, device=idx.device)
    counts.view(-1).index_add_(0, flat, torch.ones_like(flat, dtype=torch.float32))
    return sums.div_(counts.clamp_min_(1.0)), scale


def coefficient_gram(idx: Tensor, vals: Tensor, lay: Layout) -> Tensor:
    """idx, vals (P, C, k) -> (P, P) float64: the inner products of the peers' decoded tensors.

    Both codecs decode by an orthonormal transform of the scattered coefficients (the DCT-II per
    chunk, or none for SparseLoCo), which preserves inner products, so they are taken on the
    coefficients themselves: one sparse (P, numel) x (numel, P) product over P*C*k entries,
    never P dense tensors. An index one peer lists twice is summed, as decoding does.
    """
    idx, vals, scale = _check_sparse(idx, vals, lay, per_peer=True)
    peers = idx.shape[0]
    wide = vals.to(torch.float64)
    if scale is not None:
        wide = wide * scale.to(torch.float64).view(-1, 1, 1)
    pos = _positions(idx, lay, per_peer=False).reshape(peers, -1)
    rows = torch.arange(peers, device=idx.device).repeat_interleave(pos.shape[1])
    with warnings.catch_warnings():  # torch's notes that its sparse kernels are beta, on every call
        warnings.simplefilter("ignore", UserWarning)
        sparse = torch.sparse_coo_tensor(torch.stack([rows, pos.reshape(-1)]), wide.reshape(-1),
                                         (peers, math.prod(lay.shape)), check_invariants=True).coalesce()
        return torch.sparse.mm(sparse, sparse.t()).to_dense()


def _check_sparse(idx: Tensor, vals: Tensor, lay: Layout, per_peer: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """Validate (P, C, k) coefficients against a layout -> (idx int64, vals float32, scale).

    Values with |v| > `_SAFE_ABS` (finite but extreme, e.g. a hostile 3e38) would overflow the
    float32 sums of the inverse transform and mix +inf with -inf into NaN. For those, `scale`
    is a power of two per peer (or one for all peers when not `per_peer`) that the returned
    values have been divided by, to be multiplied back after the transform: exact, because a
    power of two only moves the exponent. None, the usual case, means no scaling was needed.
    One host sync covers the index range, finiteness and the scaling decision.
    """
    want = (lay.n_chunks, lay.k)
    if idx.dim() != 3 or tuple(idx.shape[1:]) != want or tuple(vals.shape) != tuple(idx.shape):
        raise ValueError(
            f"for shape {lay.shape} (chunk {lay.block}) idx and vals must be (P, {want[0]}, {want[1]}); "
            f"got idx {tuple(idx.shape)}, vals {tuple(vals.shape)}"
        )
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise ValueError(f"idx must be an integer tensor, got {idx.dtype}")
    if not vals.is_floating_point():
        raise ValueError(f"vals must be a floating-point tensor, got {vals.dtype}")
    idx = idx.to(torch.int64)
    vals = vals.to(device=idx.device, dtype=torch.float32)
    if idx.numel() == 0:
        return idx, vals, None
    amax = vals.abs().amax(dim=(1, 2)) if per_peer else vals.abs().amax().view(1)  # (P,) or (1,); NaN stays NaN
    flags = torch.stack([((idx < 0) | (idx >= lay.chunk_elems)).any(), ~torch.isfinite(amax).all(),
                         (amax > _SAFE_ABS).any()]).tolist()
    if flags[0]:
        raise ValueError(f"idx out of range [0, {lay.chunk_elems}) for shape {lay.shape}")
    if flags[1]:
        raise ValueError(f"vals hold NaN or Inf (or values beyond float32) for shape {lay.shape}")
    if not flags[2]:
        return idx, vals, None
    one = torch.ones_like(amax)
    scale = torch.where(amax > _SAFE_ABS, torch.ldexp(one, torch.frexp(amax).exponent - 1), one)  # (P,) or (1,)
    return idx, vals / scale.view(-1, 1, 1), scale
