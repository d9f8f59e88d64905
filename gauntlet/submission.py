"""The file a peer uploads each window, and the strict parser of stage 1 "format".

A peer's file is untrusted input. The reference loaded `torch.save` pickles, so a peer's file
could run code on the validator; here a file is safetensors (raw little-endian arrays behind a
JSON header) and nothing in it is ever executed. The parser reads the 8-byte header length and
the JSON header itself and checks every field against the model before safetensors touches the
tensor bytes, so a hostile header (a huge length, deep nesting, duplicate keys that two parsers
could read differently, claims of tensors larger than the model's) is refused cheaply: the header
is capped per model (`ModelSpec.max_header_bytes`), parsed in time linear in its size
(`gauntlet.safejson`), and what gets allocated is bounded by the file's own size. Values are
bounded too (`MAX_ABS_VALUE`), so no finite value overflows the arithmetic of later stages.
Every failure is a `Verdict`, never an exception: one broken file must not stop the window.

Layout: tensors ``"<param>.idx"`` (int16 on disk when the indices fit, int64 in memory) and
``"<param>.vals"`` (float32; bfloat16 and float16 are read and upcast), each ``(n_chunks, k)``,
and safetensors metadata ``{"gauntlet": <json>}`` with format_version, window, uid,
fingerprint, codec ``{chunk, topk}`` and probe ``{param: [v10, v11]}`` (the sync probe).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Any

import safetensors
import safetensors.torch
import torch

from gauntlet import safejson
from gauntlet.safejson import finite_float, is_int, show
from gauntlet.codec import Compressed, DCTCodec, Layout, layout
from gauntlet.config import CodecConfig
from gauntlet.verdicts import Reason, Verdict

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MAX_HEADER_BYTES = 4 * 2**20
"""A real header is about 200 bytes per parameter tensor (the 1.2B model: ~40 KB)."""
HEADER_BYTES_PER_TENSOR = 1024
"""Header budget per parameter (two entries and a probe pair take ~300 bytes plus the name, x3)."""
MAX_ABS_VALUE = 1e9
"""Largest |coefficient| a file may hold. Parameters are O(1) and a coefficient of a 4096-element
chunk is at most 64 times its chunk's largest element, so no pseudo-gradient comes near; the bound
keeps every later float32 sum, square and inverse transform of accepted values finite."""
META_KEY = "gauntlet"
META_FIELDS = ("format_version", "window", "uid", "fingerprint", "codec", "probe")
IDX_DTYPES = ("I16", "I32", "I64")
VALS_DTYPES = ("F32", "BF16", "F16")


@dataclass
class Submission:
    window: int
    uid: int
    fingerprint: str
    grads: Compressed
    probe: dict[str, list[float]]
    content_hash: str
    """sha256 hex of the file's bytes (identical files are copies outright)."""
    size: int


@dataclass(frozen=True)
class ModelSpec:
    """What the validator expects of every file: parameter shapes, fingerprint, codec settings."""

    shapes: Mapping[str, tuple[int, ...]]
    fingerprint: str
    chunk: int
    topk: int

    def __post_init__(self) -> None:
        if not self.shapes:
            raise ValueError("ModelSpec needs at least one parameter shape")
        frozen = {str(n): tuple(int(d) for d in s) for n, s in self.shapes.items()}
        object.__setattr__(self, "shapes", MappingProxyType(frozen))
        self.layouts  # noqa: B018 - fail now on shapes the codec cannot chunk

    @classmethod
    def build(cls, shapes: Mapping[str, tuple[int, ...]], fingerprint: str, codec: CodecConfig) -> ModelSpec:
        return cls(shapes=shapes, fingerprint=fingerprint, chunk=codec.chunk, topk=codec.topk)

    @cached_property
    def max_header_bytes(self) -> int:
        """The header cap for this model: real headers use under a third of it."""
        names = sum(len(n) for n in self.shapes)
        budget = 4096 + 2 * len(self.fingerprint) + HEADER_BYTES_PER_TENSOR * len(self.shapes) + 6 * names
        return min(MAX_HEADER_BYTES, budget)

    @cached_property
    def layouts(self) -> Mapping[str, Layout]:
        return MappingProxyType({n: layout(s, self.chunk, self.topk) for n, s in self.shapes.items()})


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_submission(window: int, uid: int, fingerprint: str, codec: DCTCodec, grads: Compressed,
                     probe: Mapping[str, list[float]]) -> bytes:
    """The file's bytes; the same inputs always give the same bytes (sorted keys and tensors)."""
    if window < 0 or uid < 0:
        raise ValueError(f"window and uid must be >= 0, got window={window}, uid={uid}")
    if not grads or set(grads) != set(probe):
        only_g, only_p = sorted(set(grads) - set(probe)), sorted(set(probe) - set(grads))
        raise ValueError(f"grads and probe must name the same non-empty set of tensors; "
                         f"only in grads: {only_g}, only in probe: {only_p}")
    tensors: dict[str, torch.Tensor] = {}
    for name in sorted(grads):
        idx, vals = grads[name]
        if idx.dim() != 2 or idx.shape != vals.shape:
            raise ValueError(f"{name}: idx and vals must both be (n_chunks, k); "
                             f"got {tuple(idx.shape)}, {tuple(vals.shape)}")
        if idx.numel() and int(idx.min()) < 0:
            raise ValueError(f"{name}: negative index {int(idx.min())}")
        if not bool(torch.isfinite(vals).all()):
            raise ValueError(f"{name}: vals hold NaN or Inf; the validator would refuse this file")
        if vals.numel() and float(vals.abs().max()) > MAX_ABS_VALUE:
            raise ValueError(f"{name}: |vals| reach {float(vals.abs().max()):.3g}, over MAX_ABS_VALUE "
                             f"{MAX_ABS_VALUE:g}; the validator would refuse this file")
        small = idx.numel() == 0 or int(idx.max()) <= torch.iinfo(torch.int16).max
        tensors[f"{name}.idx"] = idx.detach().to("cpu", torch.int16 if small else torch.int32).contiguous()
        tensors[f"{name}.vals"] = vals.detach().to("cpu", torch.float32).contiguous()
    meta = {
        "format_version": FORMAT_VERSION, "window": int(window), "uid": int(uid), "fingerprint": fingerprint,
        "codec": {"chunk": codec.chunk, "topk": codec.topk},
        "probe": {name: _probe_pair(name, probe[name]) for name in sorted(probe)},
    }
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return safetensors.torch.save(tensors, metadata={META_KEY: text})


def _probe_pair(name: str, values: Any) -> list[float]:
    pair = [float(v) for v in values]
    if len(pair) != 2 or not all(math.isfinite(v) for v in pair):
        raise ValueError(f"probe for {name} must be two finite floats, got {values!r}")
    return pair


class _Reject(Exception):
    """Control flow inside the parser only: every instance becomes a Verdict."""

    def __init__(self, detail: str, reason: Reason = Reason.MALFORMED) -> None:
        super().__init__(detail)
        self.detail = detail
        self.reason = reason


def parse_submission(data: bytes, *, window: int, uid: int, spec: ModelSpec, max_bytes: int) -> Submission | Verdict:
    """A checked `Submission`, or a MALFORMED / NON_FINITE verdict whose detail names the fault.

    `window` and `uid` are those of the key the file was read from; the file must agree. Time
    and memory are linear in the file's size. An exception the checks did not foresee is a bug
    of this parser, not proof of a bad file: it becomes an `internal_error` verdict (the peer is
    neither penalised nor accepted; window/guard.py has the rule) so that one file can never stop
    the window.
    """
    if not isinstance(data, bytes):
        raise TypeError(f"parse_submission needs bytes, got {type(data).__name__}")
    try:
        return _parse(data, window, uid, spec, max_bytes)
    except _Reject as rej:
        return Verdict(uid, rej.reason, rej.detail, stage="filter")
    except Exception as exc:  # noqa: BLE001 - the last guard of a window against one file
        log.exception("the parser failed unexpectedly on uid %s's file", uid)
        return Verdict.internal_error(uid, "filter", exc)


def _parse(data: bytes, window: int, uid: int, spec: ModelSpec, max_bytes: int) -> Submission:
    if len(data) > max_bytes:
        raise _Reject(f"file is {len(data)} bytes, over the cap of {max_bytes} bytes")
    header = _read_header(data, spec.max_header_bytes)
    meta = _read_metadata(header)
    _check_identity(meta, window, uid, spec)
    probe = _check_probe(meta["probe"], spec)
    _check_entries(header, spec)
    try:
        raw = safetensors.torch.load(data)
    except safetensors.SafetensorError as exc:
        raise _Reject(f"safetensors refused the file: {exc}") from None
    grads = {name: _check_tensors(name, raw[f"{name}.idx"], raw[f"{name}.vals"], lay)
             for name, lay in spec.layouts.items()}
    return Submission(window, uid, meta["fingerprint"], grads, probe, content_hash(data), len(data))


def _strict_json(text: bytes | str, what: str) -> Any:
    try:
        return safejson.loads(text)
    except safejson.JSONRefused as exc:
        raise _Reject(f"{what} is not valid JSON: {exc}") from None


def _read_header(data: bytes, cap: int) -> dict[str, Any]:
    if len(data) < 8:
        raise _Reject(f"file is {len(data)} bytes: truncated before the 8-byte safetensors header length")
    n = int.from_bytes(data[:8], "little")
    if n > cap:
        raise _Reject(f"header length field says {n} bytes, over this model's cap of {cap} "
                      "(not a safetensors file?)")
    if n > len(data) - 8:
        raise _Reject(f"header length field says {n} bytes but only {len(data) - 8} follow: truncated file")
    text = data[8:8 + n]
    if not text.lstrip(b" \t\r\n").startswith(b"{"):
        raise _Reject("the safetensors header does not start with a JSON object")
    header = _strict_json(text, "the safetensors header")
    if not isinstance(header, dict):
        raise _Reject(f"the safetensors header is a JSON {type(header).__name__}, not an object")
    return header


def _read_metadata(header: dict[str, Any]) -> dict[str, Any]:
    md = header.get("__metadata__")
    if not isinstance(md, dict) or META_KEY not in md:
        raise _Reject(f"no gauntlet metadata: the safetensors header lacks __metadata__.{META_KEY}")
    if set(md) != {META_KEY} or not isinstance(md[META_KEY], str):
        raise _Reject(f"__metadata__ must hold exactly one string entry {META_KEY!r}, got keys {show(sorted(md))}")
    meta = _strict_json(md[META_KEY], "the gauntlet metadata")
    if not isinstance(meta, dict):
        raise _Reject(f"the gauntlet metadata is a JSON {type(meta).__name__}, not an object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION or not is_int(version):
        raise _Reject(f"format_version {show(version)} is not supported (this validator reads {FORMAT_VERSION})")
    missing = [f for f in META_FIELDS if f not in meta]
    extra = sorted(set(meta) - set(META_FIELDS))
    if missing or extra:
        raise _Reject(f"gauntlet metadata: missing fields {missing}, unknown fields {show(extra)}")
    types = {"window": is_int, "uid": is_int, "fingerprint": lambda v: isinstance(v, str),
             "codec": lambda v: isinstance(v, dict), "probe": lambda v: isinstance(v, dict)}
    for name, ok in types.items():
        if not ok(meta[name]):
            raise _Reject(f"gauntlet metadata: {name} has the wrong type ({type(meta[name]).__name__})")
    return meta


def _check_identity(meta: dict[str, Any], window: int, uid: int, spec: ModelSpec) -> None:
    if meta["window"] != window:
        raise _Reject(f"metadata says window {meta['window']} but the file was read from the key of window {window}")
    if meta["uid"] != uid:
        raise _Reject(f"metadata says uid {meta['uid']} but the file was read from the key of uid {uid}")
    if meta["fingerprint"] != spec.fingerprint:
        raise _Reject(f"model fingerprint {show(meta['fingerprint'], 80)} does not match the validator's "
                      f"{spec.fingerprint!r}")
    codec = meta["codec"]
    if set(codec) != {"chunk", "topk"} or codec != {"chunk": spec.chunk, "topk": spec.topk} \
            or not all(is_int(v) for v in codec.values()):
        raise _Reject(f"codec settings {show(codec)} do not match the validator's "
                      f"chunk={spec.chunk} topk={spec.topk}")


def _check_probe(probe: dict[str, Any], spec: ModelSpec) -> dict[str, list[float]]:
    missing = sorted(set(spec.shapes) - set(probe))
    if missing:
        raise _Reject(f"sync probe lacks {len(missing)} tensor(s), first {show(missing[0])}")
    extra = sorted(set(probe) - set(spec.shapes))
    if extra:
        raise _Reject(f"sync probe names unknown tensor {show(extra[0])}")
    out: dict[str, list[float]] = {}
    for name in spec.shapes:
        pair = probe[name]
        values = [finite_float(v) for v in pair] if isinstance(pair, list) and len(pair) == 2 else [None]
        if any(v is None for v in values):
            raise _Reject(f"sync probe for {name!r} must be two finite numbers, got {show(pair)}")
        out[name] = values
    return out


def _check_entries(header: dict[str, Any], spec: ModelSpec) -> None:
    """Names, dtypes and shapes from the header, before any tensor byte is read."""
    names = set(header) - {"__metadata__"}
    expected = {f"{n}.{part}" for n in spec.shapes for part in ("idx", "vals")}
    unknown, missing = sorted(names - expected), sorted(expected - names)
    if unknown:
        raise _Reject(f"unknown tensor {show(unknown[0])} (not a parameter of the model)"
                      + (f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""))
    if missing:
        raise _Reject(f"missing tensor {missing[0]!r}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    for name, lay in spec.layouts.items():
        for part, allowed in (("idx", IDX_DTYPES), ("vals", VALS_DTYPES)):
            entry = header[f"{name}.{part}"]
            if not isinstance(entry, dict):
                raise _Reject(f"header entry of tensor '{name}.{part}' is not an object")
            dtype, shape = entry.get("dtype"), entry.get("shape")
            if dtype not in allowed:
                raise _Reject(f"tensor '{name}.{part}' has dtype {show(dtype, 20)}; allowed: {', '.join(allowed)}")
            want = [lay.n_chunks, lay.k]
            if not isinstance(shape, list) or not all(is_int(d) for d in shape) or shape != want:
                raise _Reject(f"tensor '{name}.{part}' has shape {show(shape)}; expected {want} "
                              f"({lay.n_chunks} chunks of {lay.chunk_elems} elements, "
                              f"k = min(topk {spec.topk}, {lay.chunk_elems}) = {lay.k})")


def _check_tensors(name: str, idx: torch.Tensor, vals: torch.Tensor, lay: Layout) -> tuple[torch.Tensor, torch.Tensor]:
    idx = idx.to(torch.int64)  # (C, k)
    bad = (idx < 0) | (idx >= lay.chunk_elems)
    if bool(bad.any()):
        chunk, col = (int(v) for v in bad.nonzero()[0])
        raise _Reject(f"tensor '{name}.idx': index {int(idx[chunk, col])} in chunk {chunk} is outside "
                      f"[0, {lay.chunk_elems})" + _more(bad))
    ordered = idx.sort(dim=1).values  # (C, k)
    dup = ordered[:, 1:] == ordered[:, :-1]  # (C, k-1)
    if bool(dup.any()):
        chunk, col = (int(v) for v in dup.nonzero()[0])
        raise _Reject(f"tensor '{name}.idx': index {int(ordered[chunk, col])} appears twice in chunk {chunk}"
                      + _more(dup))
    vals = vals.to(torch.float32)  # (C, k)
    finite = torch.isfinite(vals)
    if not bool(finite.all()):
        n_nan, n_inf = int(vals.isnan().sum()), int(vals.isinf().sum())
        raise _Reject(f"tensor '{name}.vals' holds {n_nan} NaN and {n_inf} Inf values", Reason.NON_FINITE)
    big = vals.abs() > MAX_ABS_VALUE
    if bool(big.any()):
        chunk, col = (int(v) for v in big.nonzero()[0])
        raise _Reject(f"tensor '{name}.vals': value {float(vals[chunk, col]):.3g} in chunk {chunk} is beyond "
                      f"+-{MAX_ABS_VALUE:g}" + _more(big))
    return idx, vals


def _more(mask: torch.Tensor) -> str:
    n = int(mask.sum())
    return f" ({n} such entries in this tensor)" if n > 1 else ""
