"""Hostile peer files: whatever bytes a peer uploads, stage 1 answers with a verdict, quickly.

Property tests (hypothesis) over `parse_submission` (arbitrary bytes, large repeated JSON shapes,
mutated valid files), over the codec's decode of what the parser lets through and over the sync
probe: every input gives a typed Verdict or finite numbers, never an exception, within a time and
a memory bound per example. Then regressions for the header shapes that used to take quadratic
time, and a file of extreme finite values carried through aggregation and scoring.
"""

from __future__ import annotations

import json
import math
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gauntlet import safejson
from gauntlet.aggregation import aggregate, sign_step
from gauntlet.codec import DCTCodec
from gauntlet.filter import sync_check
from gauntlet.model import build_model, param_shapes
from gauntlet.scoring import LossEvaluator, score_peers
from gauntlet.submission import MAX_ABS_VALUE, MAX_HEADER_BYTES, ModelSpec, Submission, parse_submission, \
    write_submission
from gauntlet.verdicts import INVALID_FILE, MAX_DETAIL, Reason, Verdict

CODEC = DCTCodec(chunk=64, topk=32)
SHAPES = {"layer.weight": (128, 64), "norm.weight": (48,), "odd.weight": (3, 5)}
FP = "fp-hostile"
SPEC = ModelSpec(SHAPES, FP, 64, 32)
WINDOW, UID, CAP = 7, 3, 2**21
WIDE = ModelSpec({f"t{i}.weight": (8,) for i in range(2048)}, FP, 64, 32)
"""A model with enough tensors that its header cap admits a megabyte."""
PROBE = {"layer.weight": [0.25, -0.5], "norm.weight": [1.0, 1.0], "odd.weight": [1e-3, 2e-3]}
SECONDS, PEAK_BYTES = 2.0, 64 * 2**20
"""Per example: generous against a loaded CI machine; the fixed code takes milliseconds."""
PROPERTY = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _grads(seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return CODEC.encode_all({n: torch.randn(s, generator=gen) for n, s in SHAPES.items()})


VALID = write_submission(WINDOW, UID, FP, CODEC, _grads(), PROBE)


def _bounded(fn: Callable[[], Any]) -> Any:
    """fn() timed, then run again under tracemalloc for its Python heap peak (tracing slows
    allocation-heavy code several times over, so it would distort the time)."""
    start = time.perf_counter()
    out = fn()
    elapsed = time.perf_counter() - start
    assert elapsed < SECONDS, f"took {elapsed:.2f} s"
    tracemalloc.start()
    try:
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < PEAK_BYTES, f"peak Python heap {peak / 2**20:.1f} MiB"
    return out


def _parse(data: bytes, spec: ModelSpec = SPEC) -> Submission | Verdict:
    return _bounded(lambda: parse_submission(data, window=WINDOW, uid=UID, spec=spec, max_bytes=CAP))


def _check_outcome(out: Submission | Verdict, spec: ModelSpec = SPEC) -> None:
    """A refusal is a short printable typed verdict; an acceptance decodes to finite tensors."""
    if isinstance(out, Verdict):
        assert out.reason in INVALID_FILE and (out.uid, out.stage) == (UID, "filter")
        assert len(out.detail) <= MAX_DETAIL and out.detail.isprintable(), out.detail
        return
    for name, (idx, vals) in out.grads.items():
        lay = spec.layouts[name]
        assert idx.dtype == torch.int64 and int(idx.min()) >= 0 and int(idx.max()) < lay.chunk_elems
        assert bool(torch.isfinite(vals).all()) and float(vals.abs().max()) <= MAX_ABS_VALUE
        assert bool(torch.isfinite(CODEC.decode(idx, vals, spec.shapes[name])).all())
    assert all(math.isfinite(v) for pair in out.probe.values() for v in pair)


def _with_header(header: bytes, payload: bytes = b"") -> bytes:
    return len(header).to_bytes(8, "little") + header + payload


def _split(data: bytes) -> tuple[dict[str, Any], bytes]:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n]), data[8 + n:]


# --- arbitrary and large inputs -----------------------------------------------------------------

@PROPERTY
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_get_a_verdict(data: bytes) -> None:
    _check_outcome(_parse(data))


@PROPERTY
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_behind_a_consistent_length_get_a_verdict(header: bytes) -> None:
    _check_outcome(_parse(_with_header(header, b"\0" * 64)))


SHAPES_JSON = [(b"{", b'"k%d":0,', b'"k0":0}'), (b'{"a":', b"[", b"]"), (b'{"a":', b"9", b"}"),
               (b'{"a":0.', b"9", b"}"), (b'{"a":"', b"\\u0000\\ud800", b'"}'), (b'{"a":[', b"0.5,", b"1e999]}"),
               (b'{"a":[', b"{},", b"{}]}"), (b'{"a":[', b"[0],", b"[0]]}"),
               (b'{"__metadata__":{"gauntlet":"{\\"probe\\":{', b'\\"k%d\\":[1,2],', b'\\"k0\\":0}}"}}')]
"""(prefix, piece, suffix): many keys then a duplicate, deep nesting, a megabyte-long number,
escapes and lone surrogates, many floats, many small objects and arrays, many probe keys."""


@settings(PROPERTY, max_examples=30)
@given(st.sampled_from(SHAPES_JSON), st.integers(1, 4096) | st.integers(2**19, 2**20), st.binary(max_size=8))
def test_large_repeated_json_shapes_up_to_a_megabyte(shape: tuple[bytes, bytes, bytes], size: int,
                                                     tail: bytes) -> None:
    """Shapes that stress a JSON parser, repeated to up to 1 MiB under a model whose cap admits
    the whole header (the small model's cap refuses it unread)."""
    prefix, piece, suffix = shape
    count = max(1, size // len(piece))
    many = (piece.replace(b"%d", str(i).encode()) for i in range(count)) if b"%d" in piece else [piece * count]
    header = prefix + b"".join(many) + suffix + tail
    for spec in (WIDE, SPEC):
        out = _parse(_with_header(header), spec)
        assert isinstance(out, Verdict)
        _check_outcome(out, spec)


# --- mutated valid files --------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
META_KEYS = ["format_version", "window", "uid", "fingerprint", "codec", "probe", "extra"]


@PROPERTY
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_valid_file_with_flipped_bytes(flips: list[tuple[int, int]]) -> None:
    data = bytearray(VALID)
    for pos, byte in flips:
        data[pos] = byte
    _check_outcome(_parse(bytes(data)))


@PROPERTY
@given(st.integers(0, len(VALID)), st.binary(max_size=64), st.integers(0, 64))
def test_valid_file_truncated_or_spliced(at: int, insert: bytes, cut: int) -> None:
    _check_outcome(_parse(VALID[:at]))
    _check_outcome(_parse(VALID[:at] + insert + VALID[at + cut:]))


@PROPERTY
@given(st.sampled_from(META_KEYS), JSON_VALUES, st.sampled_from(["meta", "entry", "probe"]))
def test_valid_file_with_a_field_replaced_by_any_json(key: str, value: Any, where: str) -> None:
    header, payload = _split(VALID)
    meta = json.loads(header["__metadata__"]["gauntlet"])
    if where == "meta":
        meta[key] = value
    elif where == "probe":
        meta["probe"]["odd.weight"] = value
    else:
        header["norm.weight.vals"][key if key in ("dtype", "shape") else "shape"] = value
    header["__metadata__"]["gauntlet"] = json.dumps(meta)
    _check_outcome(_parse(_with_header(json.dumps(header).encode(), payload)))


FLOAT32 = st.floats(width=32)  # every float32: NaN, +-Inf, +-3.4e38, subnormals
INDEX_DTYPES = [torch.int16, torch.int32, torch.int64]


@PROPERTY
@given(st.lists(FLOAT32, min_size=1, max_size=32), st.sampled_from(INDEX_DTYPES),
       st.lists(st.integers(-(2**31), 2**31 - 1), max_size=4))
def test_valid_file_with_any_values_and_indices(values: list[float], idx_dtype: torch.dtype,
                                                indices: list[int]) -> None:
    """Any float32 values (extreme, subnormal, non-finite) and indices at any dtype's bounds."""
    tensors = {}
    for name, (idx, vals) in _grads().items():
        vals = vals.clone().flatten()
        vals[: len(values)] = torch.tensor(values[: vals.numel()], dtype=torch.float32)
        wide = idx.to(idx_dtype).flatten()
        for i, v in enumerate(indices[: wide.numel()]):
            wide[i] = max(min(v, torch.iinfo(idx_dtype).max), torch.iinfo(idx_dtype).min)
        tensors[f"{name}.idx"], tensors[f"{name}.vals"] = wide.view(idx.shape), vals.view(idx.shape)
    header, _ = _split(VALID)
    out = _parse(safetensors.torch.save(tensors, metadata=header["__metadata__"]))
    _check_outcome(out)
    if not indices and all(math.isfinite(v) for v in values) and max(map(abs, values)) > MAX_ABS_VALUE:
        assert isinstance(out, Verdict) and "beyond +-1e+09" in out.detail


# --- the codec and the sync probe on what the parser lets through --------------------------------

@PROPERTY
@given(st.lists(st.floats(-MAX_ABS_VALUE, MAX_ABS_VALUE, width=32), min_size=1, max_size=64),
       st.lists(FLOAT32.filter(math.isfinite), min_size=1, max_size=8), st.integers(1, 4))
def test_decode_of_accepted_values_is_finite_and_extreme_ones_never_nan(
        accepted: list[float], extreme: list[float], peers: int) -> None:
    lay = CODEC.layout((128, 64))
    idx = torch.stack([torch.randperm(lay.chunk_elems, generator=torch.Generator().manual_seed(c))[: lay.k]
                       for c in range(lay.n_chunks)]).sort(dim=1).values
    n = lay.n_chunks * lay.k
    vals = torch.tensor((accepted * n)[:n], dtype=torch.float32).view(idx.shape)
    many = (torch.stack([idx] * peers), torch.stack([vals] * peers))
    for out in _bounded(lambda: [CODEC.decode(idx, vals, lay.shape), CODEC.decode_mean(*many, lay.shape),
                                 aggregate(CODEC, [{"w": (idx, vals)}] * peers, {"w": lay.shape})["w"]]):
        assert bool(torch.isfinite(out).all())
    wild = torch.tensor((extreme * n)[:n], dtype=torch.float32).view(idx.shape)
    for out in (CODEC.decode(idx, wild, lay.shape), CODEC.decode_mean(torch.stack([idx] * peers),
                                                                      torch.stack([wild] * peers), lay.shape)):
        assert not bool(out.isnan().any())


@PROPERTY
@given(st.integers(0, 2**16), st.sampled_from([(0, 1), (4095, 4096), (-1, 0), (4096, 2**31 - 1)]))
def test_decode_of_indices_at_and_past_the_bounds(seed: int, bounds: tuple[int, int]) -> None:
    lay = CODEC.layout((64, 64))
    idx = torch.randint(*bounds, (1, lay.k), generator=torch.Generator().manual_seed(seed))
    vals = torch.ones(1, lay.k)
    if 0 <= bounds[0] and bounds[1] <= lay.chunk_elems:
        assert bool(torch.isfinite(CODEC.decode(idx, vals, lay.shape)).all())
    else:
        with pytest.raises(ValueError, match="out of range"):
            CODEC.decode(idx, vals, lay.shape)


PROBES = st.dictionaries(st.sampled_from(["a", "b", "c"]), st.lists(st.floats(), max_size=3), max_size=3)


@PROPERTY
@given(PROBES, PROBES, st.floats(min_value=1e-300, max_value=1e300))
def test_sync_check_gives_a_verdict_and_finite_numbers_for_any_probe(ours: dict, theirs: dict, lr: float) -> None:
    out = _bounded(lambda: sync_check(UID, ours, theirs, lr, cap=5.0, exponent=2.5, max_steps=3.0))
    assert out.verdict.uid == UID and out.verdict.stage == "sync"
    if out.steps is None:
        assert out.score is None and not out.verdict.ok and out.verdict.reason is not Reason.DESYNCED
    else:
        assert math.isfinite(out.steps) and out.steps >= 0 and 0.0 <= out.score <= 1.0
        assert out.verdict.reason in (Reason.OK, Reason.DESYNCED)


@PROPERTY
@given(st.text(max_size=2000))
def test_verdict_details_are_short_and_printable(text: str) -> None:
    detail = Verdict(UID, Reason.MALFORMED, text).detail
    assert len(detail) <= MAX_DETAIL and detail.isprintable()
    assert Verdict(UID, Reason.MALFORMED, detail).detail == detail  # cleaning twice changes nothing


# --- regressions: header shapes that took quadratic time -----------------------------------------

DUPLICATE_AT_END = b"{" + b",".join(b'"k%d":0' % i for i in range(100_000)) + b',"k0":1}'  # 1.1 MB


def test_duplicate_key_after_100k_distinct_keys_is_refused_in_well_under_a_second() -> None:
    """The first parser rebuilt a dict per key to name the duplicate: ~200 s for this header."""
    assert WIDE.max_header_bytes > len(DUPLICATE_AT_END) + 100
    start = time.perf_counter()
    with pytest.raises(safejson.JSONRefused, match="duplicate key 'k0'"):
        safejson.loads(DUPLICATE_AT_END)
    assert time.perf_counter() - start < 1.0
    meta = json.dumps({"__metadata__": {"gauntlet": DUPLICATE_AT_END.decode()}}).encode()
    for header, words in ((DUPLICATE_AT_END, "the safetensors header is not valid JSON: duplicate key 'k0'"),
                          (meta, "the gauntlet metadata is not valid JSON: duplicate key 'k0'")):
        start = time.perf_counter()
        out = parse_submission(_with_header(header), window=WINDOW, uid=UID, spec=WIDE, max_bytes=CAP)
        assert time.perf_counter() - start < 1.0
        assert isinstance(out, Verdict) and out.detail == words


def test_long_integer_literals_are_refused_before_int_sees_them() -> None:
    start = time.perf_counter()
    for text in (b'{"a":' + b"9" * 4000 + b"}", b'{"a":[' + b"1" * 41 + b"]}"):
        with pytest.raises(safejson.JSONRefused, match="integer literal"):
            safejson.loads(text)
    assert safejson.loads(b'{"a":' + b"9" * 40 + b"}") == {"a": int("9" * 40)}
    assert time.perf_counter() - start < 0.5


def test_a_header_over_the_model_cap_is_refused_without_reading_it() -> None:
    assert SPEC.max_header_bytes < 16_384 < WIDE.max_header_bytes <= MAX_HEADER_BYTES
    out = _parse(_with_header(DUPLICATE_AT_END))
    assert isinstance(out, Verdict) and "over this model's cap" in out.detail


def test_peer_text_in_details_is_escaped() -> None:
    header, payload = _split(VALID)
    meta = json.loads(header["__metadata__"]["gauntlet"])
    meta["fingerprint"] = "evil\n\u202e\x1b[31m\ud800" + "x" * 5000
    header["__metadata__"]["gauntlet"] = json.dumps(meta)
    out = _parse(_with_header(json.dumps(header).encode(), payload))
    assert isinstance(out, Verdict) and out.detail.isprintable() and len(out.detail) <= MAX_DETAIL
    assert "evil\\n\\u202e\\x1b[31m\\ud800" in out.detail


# --- extreme finite values through aggregation and scoring ---------------------------------------

def test_extreme_finite_values_give_a_verdict_or_finite_aggregate_and_scores() -> None:
    model = build_model("tiny", 256, seed=0)
    shapes = param_shapes(model)
    spec = ModelSpec(shapes, FP, 64, 32)
    gen = torch.Generator().manual_seed(1)
    honest = CODEC.encode_all({n: torch.randn(s, generator=gen) * 1e-3 for n, s in shapes.items()})
    loud = {n: (idx, torch.sign(vals) * MAX_ABS_VALUE) for n, (idx, vals) in honest.items()}
    huge = {n: (idx, torch.sign(vals) * torch.finfo(torch.float32).max) for n, (idx, vals) in honest.items()}
    probe = {n: [1.7e308, -1.7e308] for n in shapes}

    def parse(grads: dict, uid: int) -> Submission | Verdict:
        data = safetensors.torch.save(
            {f"{n}.{p}": t for n, (i, v) in grads.items() for p, t in (("idx", i.to(torch.int16)), ("vals", v))},
            metadata={"gauntlet": json.dumps({"format_version": 1, "window": WINDOW, "uid": uid, "fingerprint": FP,
                                              "codec": {"kind": "dct", "chunk": 64, "topk": 32}, "probe": probe})})
        return parse_submission(data, window=WINDOW, uid=uid, spec=spec, max_bytes=2**26)

    refused = parse(huge, 2)
    assert isinstance(refused, Verdict) and refused.reason is Reason.MALFORMED and "beyond +-1e+09" in refused.detail
    subs = {1: parse(honest, 1), 3: parse(loud, 3)}
    assert all(isinstance(s, Submission) for s in subs.values())
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    sync = sync_check(3, {n: [0.0, 0.0] for n in shapes}, subs[3].probe, 1e-3, cap=5.0, exponent=2.5, max_steps=3.0)
    assert sync.verdict.reason is Reason.DESYNCED and math.isfinite(sync.steps) and sync.score == 0.0

    delta = aggregate(CODEC, [s.grads for s in subs.values()], shapes)
    assert all(bool(torch.isfinite(d).all()) for d in delta.values())
    sign_step(theta, delta, lr=1e-3)
    assert all(bool(torch.isfinite(t).all()) for t in theta.values())
    batches = [torch.randint(0, 256, (2, 16), generator=gen) for _ in range(2)]
    losses = score_peers(LossEvaluator(model), {u: CODEC.decode_all(s.grads, shapes) for u, s in subs.items()},
                         {u: batches for u in subs}, batches, eta=2e-4)
    for row in losses.values():
        values = (row.own_before, row.own_after, row.rand_before, row.rand_after, row.gradient_score)
        assert all(math.isfinite(v) for v in values), row


def test_headers_are_utf8_only() -> None:
    """json.loads alone reads UTF-16 bytes; safetensors reads UTF-8: there must be one reading."""
    utf16 = '{"a": 1}'.encode("utf-16-le")
    assert json.loads(utf16) == {"a": 1}
    assert safejson.loads('{"a": "\u00e9"}'.encode()) == {"a": "\u00e9"}
    with pytest.raises(safejson.JSONRefused):
        safejson.loads(utf16)
    with pytest.raises(safejson.JSONRefused, match="UnicodeDecodeError"):
        safejson.loads(b'{"a": "\xff"}')
    out = _parse(_with_header(utf16))
    assert isinstance(out, Verdict) and "the safetensors header is not valid JSON" in out.detail
