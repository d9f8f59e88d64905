"""The tensors a submission holds per parameter, for each codec kind (the body of the file format).

gauntlet/submission.py reads and checks the header and metadata; this module knows, per codec,
which tensors a parameter has, what their dtypes and shapes must be (checked from the header,
before any tensor byte is read), and how to turn them into the (idx, vals) pairs every later
stage takes. A file of either kind is checked as strictly: every index in range and unrepeated,
every value finite and within `MAX_ABS_VALUE`, every length exact.

- ``dct``: ``"<param>.idx"`` (int16 on disk when the indices fit, int32/int64 read too) and
  ``"<param>.vals"`` (float32; bfloat16 and float16 are read and upcast), each ``(n_chunks, k)``.
- ``sparseloco``: ``"<param>.idx"`` (uint8, 12-bit packed), ``"<param>.codes"`` (uint8, packed
  level codes) and ``"<param>.qparams"`` (float32 ``[shift, scale, lookup...]``), shapes from
  ``SparseLoCoCodec.payload_shapes``; gauntlet/sparseloco.py decodes and checks them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from gauntlet.codec import Codec, Layout
from gauntlet.safejson import is_int, show
from gauntlet.sparseloco import PARTS as SPARSELOCO_PARTS
from gauntlet.sparseloco import MAX_CHUNK_ELEMS, PayloadProblem, Quantized, SparseLoCoCodec, pack_12bit, unpack_12bit
from gauntlet.verdicts import Reason

MAX_ABS_VALUE = 1e9
"""Largest |value| a file may hold. Parameters are O(1) and a coefficient of a 4096-element
chunk is at most 64 times its chunk's largest element, so no pseudo-gradient comes near; the bound
keeps every later float32 sum, square and inverse transform of accepted values finite."""
IDX_DTYPES = ("I16", "I32", "I64")
VALS_DTYPES = ("F32", "BF16", "F16")
DCT_PARTS = ("idx", "vals")


class Reject(Exception):
    """A file fault found by the checks: the parser turns every instance into a Verdict."""

    def __init__(self, detail: str, reason: Reason = Reason.MALFORMED) -> None:
        super().__init__(detail)
        self.detail = detail
        self.reason = reason


def parts_of(codec: Codec) -> tuple[str, ...]:
    return SPARSELOCO_PARTS if codec.kind == "sparseloco" else DCT_PARTS


def entry_rules(codec: Codec, lay: Layout) -> dict[str, tuple[tuple[str, ...], list[int]]]:
    """part -> (allowed safetensors dtypes, shape) of one parameter's tensors."""
    if isinstance(codec, SparseLoCoCodec):
        return {part: ((dtype,), list(shape)) for part, (dtype, shape) in codec.payload_shapes(lay.shape).items()}
    want = [lay.n_chunks, lay.k]
    return {"idx": (IDX_DTYPES, want), "vals": (VALS_DTYPES, want)}


def check_entries(header: Mapping[str, Any], layouts: Mapping[str, Layout], codec: Codec) -> None:
    """Names, dtypes and shapes from the header, before any tensor byte is read."""
    names = set(header) - {"__metadata__"}
    expected = {f"{n}.{part}" for n in layouts for part in parts_of(codec)}
    unknown, missing = sorted(names - expected), sorted(expected - names)
    if unknown:
        raise Reject(f"unknown tensor {show(unknown[0])} (not a parameter of the model)"
                     + (f" and {len(unknown) - 1} more" if len(unknown) > 1 else "")
                     + f"; a {codec.kind} file holds {', '.join(parts_of(codec))} per parameter")
    if missing:
        raise Reject(f"missing tensor {missing[0]!r}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    for name, lay in layouts.items():
        for part, (allowed, want) in entry_rules(codec, lay).items():
            entry = header[f"{name}.{part}"]
            if not isinstance(entry, dict):
                raise Reject(f"header entry of tensor '{name}.{part}' is not an object")
            dtype, shape = entry.get("dtype"), entry.get("shape")
            if dtype not in allowed:
                raise Reject(f"tensor '{name}.{part}' has dtype {show(dtype, 20)}; allowed: {', '.join(allowed)}")
            if not isinstance(shape, list) or not all(is_int(d) for d in shape) or shape != want:
                raise Reject(f"tensor '{name}.{part}' has shape {show(shape)}; expected {want} "
                             f"({lay.n_chunks} chunks of {lay.chunk_elems} elements, "
                             f"k = min(topk {codec.topk}, {lay.chunk_elems}) = {lay.k})")


def read_pair(codec: Codec, name: str, raw: Mapping[str, torch.Tensor], lay: Layout) -> tuple[torch.Tensor, torch.Tensor]:
    """One parameter's checked (idx int64 (C, k), vals float32 (C, k)) from the loaded tensors."""
    if isinstance(codec, SparseLoCoCodec):
        out = codec.decode_payload({p: raw[f"{name}.{p}"] for p in SPARSELOCO_PARTS}, lay.shape, name)
        if isinstance(out, PayloadProblem):
            raise Reject(f"tensor {out.detail}", Reason.NON_FINITE if out.non_finite else Reason.MALFORMED)
        idx, vals = out
        return idx, _bounded(f"{name}.qparams", vals)
    return _check_dct(name, raw[f"{name}.idx"], raw[f"{name}.vals"], lay)


def write_parts(codec: Codec, name: str, pair: tuple[torch.Tensor, torch.Tensor] | Quantized) -> dict[str, torch.Tensor]:
    """The tensors (by full name) that stand for one parameter's (idx, vals) in a file of `codec`.

    A `Quantized` (the SparseLoCo miner's own encoding) is packed as it is; any other pair is
    quantised afresh, which is what a SparseLoCo file of transformed values (a copy, a scaled
    update) holds. Raises ValueError for what the validator would refuse.
    """
    idx, vals = pair
    if idx.dim() != 2 or idx.shape != vals.shape:
        raise ValueError(f"{name}: idx and vals must both be (n_chunks, k); got {tuple(idx.shape)}, {tuple(vals.shape)}")
    if idx.numel() and int(idx.min()) < 0:
        raise ValueError(f"{name}: negative index {int(idx.min())}")
    if not bool(torch.isfinite(vals).all()):
        raise ValueError(f"{name}: vals hold NaN or Inf; the validator would refuse this file")
    if vals.numel() and float(vals.abs().max()) > MAX_ABS_VALUE:
        raise ValueError(f"{name}: |vals| reach {float(vals.abs().max()):.3g}, over MAX_ABS_VALUE "
                         f"{MAX_ABS_VALUE:g}; the validator would refuse this file")
    if isinstance(codec, SparseLoCoCodec):
        q = pair if isinstance(pair, Quantized) and pair.bits == codec.bits else codec.quantize_pair(idx, vals)
        return {f"{name}.{part}": t for part, t in q.pack().items()}
    small = idx.numel() == 0 or int(idx.max()) <= torch.iinfo(torch.int16).max
    return {f"{name}.idx": idx.detach().to("cpu", torch.int16 if small else torch.int32).contiguous(),
            f"{name}.vals": vals.detach().to("cpu", torch.float32).contiguous()}


def _check_dct(name: str, idx: torch.Tensor, vals: torch.Tensor, lay: Layout) -> tuple[torch.Tensor, torch.Tensor]:
    idx = idx.to(torch.int64)  # (C, k)
    bad = (idx < 0) | (idx >= lay.chunk_elems)
    if bool(bad.any()):
        chunk, col = (int(v) for v in bad.nonzero()[0])
        raise Reject(f"tensor '{name}.idx': index {int(idx[chunk, col])} in chunk {chunk} is outside "
                     f"[0, {lay.chunk_elems})" + _more(bad))
    ordered = idx.sort(dim=1).values  # (C, k)
    dup = ordered[:, 1:] == ordered[:, :-1]  # (C, k-1)
    if bool(dup.any()):
        chunk, col = (int(v) for v in dup.nonzero()[0])
        raise Reject(f"tensor '{name}.idx': index {int(ordered[chunk, col])} appears twice in chunk {chunk}"
                     + _more(dup))
    vals = vals.to(torch.float32)  # (C, k)
    finite = torch.isfinite(vals)
    if not bool(finite.all()):
        n_nan, n_inf = int(vals.isnan().sum()), int(vals.isinf().sum())
        raise Reject(f"tensor '{name}.vals' holds {n_nan} NaN and {n_inf} Inf values", Reason.NON_FINITE)
    return idx, _bounded(f"{name}.vals", vals)


def _bounded(tensor: str, vals: torch.Tensor) -> torch.Tensor:
    big = vals.abs() > MAX_ABS_VALUE
    if bool(big.any()):
        chunk, col = (int(v) for v in big.nonzero()[0])
        raise Reject(f"tensor '{tensor}': value {float(vals[chunk, col]):.3g} in chunk {chunk} is beyond "
                     f"+-{MAX_ABS_VALUE:g}" + _more(big))
    return vals


def _more(mask: torch.Tensor) -> str:
    n = int(mask.sum())
    return f" ({n} such entries in this tensor)" if n > 1 else ""


def corrupt_parts(tensors: dict[str, torch.Tensor], fault: str, codec: Codec, layouts: Mapping[str, Layout]) -> None:
    """Break a valid file's tensors in place in one known way, whatever the codec (the local
    network's malformed peer, and tests): `nan` puts a NaN among the first parameter's values,
    `index_out_of_range` an index just past the end of its chunk."""
    name = sorted(layouts)[0]
    sparseloco = isinstance(codec, SparseLoCoCodec)
    if fault == "nan":
        values = tensors[f"{name}.qparams" if sparseloco else f"{name}.vals"]
        values.view(-1)[0] = float("nan")
    elif fault == "index_out_of_range" and not sparseloco:
        idx = tensors[f"{name}.idx"].to(torch.int32)
        idx[0, 0] = layouts[name].chunk_elems
        tensors[f"{name}.idx"] = idx
    elif fault == "index_out_of_range":
        small = [n for n in sorted(layouts) if layouts[n].chunk_elems < MAX_CHUNK_ELEMS]
        if not small:
            raise ValueError(f"every chunk has {MAX_CHUNK_ELEMS} elements: no 12-bit index lies past one's end")
        lay = layouts[small[0]]
        idx, _ = unpack_12bit(tensors[f"{small[0]}.idx"], lay.n_chunks * lay.k)
        idx[0] = lay.chunk_elems
        tensors[f"{small[0]}.idx"] = pack_12bit(idx)
    else:
        raise ValueError(f"unknown fault {fault!r}; choose nan or index_out_of_range")
