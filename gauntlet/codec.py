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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gauntlet.config import CodecConfig

Compressed = dict[str, tuple[Tensor, Tensor]]
"""Tensor name -> (idx int64 (n_chunks, k), vals float32 (n_chunks, k))."""


@dataclass(frozen=True)
class Layout:
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
    """(*shape) -> (n_chunks, *block), chunks in row-major order of the block grid."""
    if len(lay.block) == 1:
        return x.reshape(lay.n_chunks, lay.block[0])
    (r, c), (br, bc) = lay.shape, lay.block
    return x.reshape(r // br, br, c // bc, bc).permute(0, 2, 1, 3).reshape(lay.n_chunks, br, bc)


def _from_chunks(chunks: Tensor, lay: Layout) -> Tensor:
    """(B, n_chunks, *block) -> (B, *shape): the inverse of `_to_chunks`, with a batch dim."""
    batch = chunks.shape[0]
    if len(lay.block) == 1:
        return chunks.reshape(batch, *lay.shape)
    (r, c), (br, bc) = lay.shape, lay.block
    grid = chunks.reshape(batch, r // br, c // bc, br, bc).permute(0, 1, 3, 2, 4)
    return grid.reshape(batch, r, c)


def _transform(chunks: Tensor, lay: Layout, inverse: bool) -> Tensor:
    """DCT-II (or its inverse) of every chunk: (N, *block) -> (N, *block)."""
    bases = [_basis(n, chunks.device, chunks.dtype) for n in lay.block]
    if len(bases) == 1:
        (d,) = bases
        return chunks @ d if inverse else chunks @ d.T  # (N, cn)
    dr, dc = bases
    if inverse:
        return torch.matmul(torch.matmul(dr.T, chunks), dc)  # (N, cr, cc)
    return torch.matmul(torch.matmul(dr, chunks), dc.T)  # (N, cr, cc)


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


class DCTCodec:
    """Encode and decode pseudo-gradients; `chunk` and `topk` are consensus values (CodecConfig)."""

    def __init__(self, chunk: int = 64, topk: int = 32) -> None:
        if chunk < 1 or topk < 1:
            raise ValueError(f"chunk and topk must be >= 1, got chunk={chunk}, topk={topk}")
        self.chunk = chunk
        self.topk = topk

    @classmethod
    def from_config(cls, cfg: CodecConfig) -> DCTCodec:
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
        chunks = _to_chunks(x.detach().to(work), lay)  # (C, *block)
        coef = _transform(chunks, lay, inverse=False).reshape(lay.n_chunks, lay.chunk_elems)  # (C, E)
        idx = _topk_canonical(coef.abs(), lay.k)  # (C, k)
        return idx, coef.gather(-1, idx).to(torch.float32)

    def decode(self, idx: Tensor, vals: Tensor, shape: Sequence[int]) -> Tensor:
        """Dense float32 tensor of `shape` on idx's device: the IDCT of the kept coefficients."""
        return self.decode_batch(idx.unsqueeze(0), vals.unsqueeze(0), shape)[0]

    def decode_batch(self, idx: Tensor, vals: Tensor, shape: Sequence[int]) -> Tensor:
        """idx, vals (P, C, k) -> (P, *shape): every peer's dense tensor, with one scatter."""
        lay = self.layout(shape)
        idx, vals = _check_sparse(idx, vals, lay)
        peers = idx.shape[0]
        rows = peers * lay.n_chunks
        offsets = torch.arange(rows, device=idx.device).mul_(lay.chunk_elems).view(peers, lay.n_chunks, 1)
        dense = torch.zeros(rows * lay.chunk_elems, dtype=torch.float32, device=idx.device)
        dense.index_add_(0, (idx + offsets).flatten(), vals.flatten())  # (P*C*E,)
        chunks = _transform(dense.view(rows, *lay.block), lay, inverse=True)  # (P*C, *block)
        return _from_chunks(chunks.reshape(peers, lay.n_chunks, *lay.block), lay)

    def decode_mean(self, idx: Tensor, vals: Tensor, shape: Sequence[int]) -> Tensor:
        """idx, vals (P, C, k) -> (*shape): IDCT of the per-index mean over the peers that chose it.

        An index no peer chose stays zero (it is not averaged with zeros), which is the
        reference's scatter-mean. A peer listing an index twice counts twice; stage 1 is where
        such files are refused.
        """
        lay = self.layout(shape)
        idx, vals = _check_sparse(idx, vals, lay)
        size = lay.n_chunks * lay.chunk_elems
        offsets = torch.arange(lay.n_chunks, device=idx.device).mul_(lay.chunk_elems).view(1, -1, 1)
        flat = (idx + offsets).flatten()  # (P*C*k,)
        sums = torch.zeros(size, dtype=torch.float32, device=idx.device).index_add_(0, flat, vals.flatten())
        counts = torch.zeros(size, dtype=torch.float32, device=idx.device)
        counts.index_add_(0, flat, torch.ones_like(flat, dtype=torch.float32))
        mean = (sums / counts.clamp_min(1.0)).view(lay.n_chunks, *lay.block)
        return _from_chunks(_transform(mean, lay, inverse=True).unsqueeze(0), lay)[0]

    def encode_all(self, tensors: Mapping[str, Tensor]) -> Compressed:
        return {name: self.encode(t) for name, t in tensors.items()}

    def decode_all(self, c: Compressed, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Tensor]:
        missing = sorted(set(c) - set(shapes))
        if missing:
            raise ValueError(f"no shape given for compressed tensors {missing}")
        return {name: self.decode(idx, vals, shapes[name]) for name, (idx, vals) in c.items()}


def _check_sparse(idx: Tensor, vals: Tensor, lay: Layout) -> tuple[Tensor, Tensor]:
    """Validate (P, C, k) coefficients against a layout; -> (idx int64, vals float32) on idx's device."""
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
    if idx.numel() and bool(((idx < 0) | (idx >= lay.chunk_elems)).any()):
        raise ValueError(f"idx out of range [0, {lay.chunk_elems}) for shape {lay.shape}")
    return idx, vals.to(device=idx.device, dtype=torch.float32)
