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

Layout: per parameter the tensors of the file's codec (gauntlet/payload.py: ``idx`` and ``vals``
for DCT; packed ``idx``, ``codes`` and ``qparams`` for SparseLoCo) and safetensors metadata
``{"gauntlet": <json>}`` with format_version, window, uid, fingerprint, codec (``{kind, chunk,
topk}``, plus ``bins`` for SparseLoCo: what a decoder needs) and probe ``{param: [v10, v11]}``
(the sync probe). A file of another codec than the validator's is refused before its tensors
are looked at, with a verdict that names both kinds.
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
from gauntlet.codec import Codec, Compressed, Layout, make_codec
from gauntlet.config import CodecConfig
from gauntlet.payload import MAX_ABS_VALUE as MAX_ABS_VALUE  # re-exported: tests and tools bound files by it
from gauntlet.payload import Reject, check_entries, read_pair, write_parts
from gauntlet.verdicts import Verdict

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MAX_HEADER_BYTES = 4 * 2**20
"""A real header is about 200 bytes per parameter tensor (the 1.2B model: ~40 KB)."""
HEADER_BYTES_PER_TENSOR = 1024
"""Header budget per parameter (three entries and a probe pair take ~400 bytes plus the name, x2.5)."""
META_KEY = "gauntlet"
META_FIELDS = ("format_version", "window", "uid", "fingerprint", "codec", "probe")


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
    kind: str = "dct"
    bins: int = 4
    """SparseLoCo's level count (unused by DCT)."""

    def __post_init__(self) -> None:
        if not self.shapes:
            raise ValueError("ModelSpec needs at least one parameter shape")
        frozen = {str(n): tuple(int(d) for d in s) for n, s in self.shapes.items()}
        object.__setattr__(self, "shapes", MappingProxyType(frozen))
        self.codec  # noqa: B018 - fail now on an unknown kind or settings the codec refuses
        self.layouts  # noqa: B018 - fail now on shapes the codec cannot chunk

    @classmethod
    def build(cls, shapes: Mapping[str, tuple[int, ...]], fingerprint: str, codec: CodecConfig) -> ModelSpec:
        return cls(shapes=shapes, fingerprint=fingerprint, chunk=codec.chunk, topk=codec.topk, kind=codec.kind,
                   bins=codec.bins)

    @cached_property
    def codec(self) -> Codec:
        """The decoder of this network's files (a SparseLoCo decoder needs no range or decay)."""
        return make_codec(CodecConfig(kind=self.kind, chunk=self.chunk, topk=self.topk, bins=self.bins))

    @cached_property
    def codec_meta(self) -> dict[str, Any]:
        return codec_meta(self.codec)

    @cached_property
    def max_header_bytes(self) -> int:
        """The header cap for this model: real headers use under a third of it."""
        names = sum(len(n) for n in self.shapes)
        budget = 4096 + 2 * len(self.fingerprint) + HEADER_BYTES_PER_TENSOR * len(self.shapes) + 6 * names
        return min(MAX_HEADER_BYTES, budget)

    @cached_property
    def layouts(self) -> Mapping[str, Layout]:
        return MappingProxyType({n: self.codec.layout(s) for n, s in self.shapes.items()})


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def codec_meta(codec: Codec) -> dict[str, Any]:
    """The file's `codec` metadata: the kind and the settings its decoder needs."""
    meta = {"kind": codec.kind, "chunk": codec.chunk, "topk": codec.topk}
    if codec.kind == "sparseloco":
        meta["bins"] = codec.bins  # type: ignore[attr-defined]
    return meta


def write_submission(window: int, uid: int, fingerprint: str, codec: Codec, grads: Compressed,
                     probe: Mapping[str, list[float]]) -> bytes:
    """The file's bytes; the same inputs always give the same bytes (sorted keys and tensors).

    For a SparseLoCo codec a `sparseloco.Quantized` value is packed as the miner encoded it; a
    plain (idx, vals) pair is quantised afresh (gauntlet/payload.py `write_parts`).
    """
    if window < 0 or uid < 0:
        raise ValueError(f"window and uid must be >= 0, got window={window}, uid={uid}")
    if not grads or set(grads) != set(probe):
        only_g, only_p = sorted(set(grads) - set(probe)), sorted(set(probe) - set(grads))
        raise ValueError(f"grads and probe must name the same non-empty set of tensors; "
                         f"only in grads: {only_g}, only in probe: {only_p}")
    tensors: dict[str, torch.Tensor] = {}
    for name in sorted(grads):
        tensors.update(write_parts(codec, name, grads[name]))
    meta = {
        "format_version": FORMAT_VERSION, "window": int(window), "uid": int(uid), "fingerprint": fingerprint,
        "codec": codec_meta(codec),
        "probe": {name: _probe_pair(name, probe[name]) for name in sorted(probe)},
    }
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return safetensors.torch.save(tensors, metadata={META_KEY: text})


def _probe_pair(name: str, values: Any) -> list[float]:
    pair = [float(v) for v in values]
    if len(pair) != 2 or not all(math.isfinite(v) for v in pair):
        raise ValueError(f"probe for {name} must be two finite floats, got {values!r}")
    return pair


_Reject = Reject
"""Control flow inside the parser only: every instance becomes a Verdict."""


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
    check_entries(header, spec.layouts, spec.codec)
    try:
        raw = safetensors.torch.load(data)
    except safetensors.SafetensorError as exc:
        raise _Reject(f"safetensors refused the file: {exc}") from None
    grads = {name: read_pair(spec.codec, name, raw, lay) for name, lay in spec.layouts.items()}
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
    _check_kind(meta["codec"], spec)
    if meta["window"] != window:
        raise _Reject(f"metadata says window {meta['window']} but the file was read from the key of window {window}")
    if meta["uid"] != uid:
        raise _Reject(f"metadata says uid {meta['uid']} but the file was read from the key of uid {uid}")
    if meta["fingerprint"] != spec.fingerprint:
        raise _Reject(f"model fingerprint {show(meta['fingerprint'], 80)} does not match the validator's "
                      f"{spec.fingerprint!r}")
    codec, want = meta["codec"], spec.codec_meta
    if codec != want or not all(type(v) is type(want[k]) for k, v in codec.items()):
        settings = " ".join(f"{k}={v}" for k, v in want.items())
        raise _Reject(f"codec settings {show(codec)} do not match the validator's {settings}")


def _check_kind(codec: dict[str, Any], spec: ModelSpec) -> None:
    """A file of the other codec is named as such (before the fingerprint, which topk changes)."""
    kind = codec.get("kind")
    if kind != spec.kind:
        raise _Reject(f"the file is written with codec kind {show(kind, 40)} but this validator reads "
                      f"{spec.kind!r} files (codec.kind); a peer must upload the network's codec")


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
