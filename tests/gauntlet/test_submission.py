"""The submission file: round trips, and one real malformed file for every rejection reason.

Bad files are built by hand (raw headers, safetensors with wrong contents, pickles) and parsed
from bytes in memory or on disk; each test asserts the reason and the words of the detail.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import random
from pathlib import Path

import pytest
import safetensors.torch
import torch

from gauntlet.codec import Compressed, DCTCodec
from gauntlet.config import CodecConfig
from gauntlet import submission
from gauntlet.submission import (
    MAX_ABS_VALUE, MAX_HEADER_BYTES, ModelSpec, Submission, parse_submission, write_submission,
)
from gauntlet.verdicts import Reason, Verdict

CODEC = DCTCodec(chunk=64, topk=32)
# A 2-chunk matrix (k = 32 of 4096), a 1-chunk vector (k = 32 of 48), a 3x5 matrix (k = 15 of 15).
SHAPES = {"layer.weight": (128, 64), "norm.weight": (48,), "odd.weight": (3, 5)}
FP = "fp-tiny-0123"
SPEC = ModelSpec(SHAPES, FP, 64, 32)
WINDOW, UID, CAP = 7, 3, 2**20
PROBE = {"layer.weight": [0.25, -0.5], "norm.weight": [1.0, 1.0], "odd.weight": [1e-3, 2e-3]}


def _grads(seed: int = 0) -> Compressed:
    gen = torch.Generator().manual_seed(seed)
    return CODEC.encode_all({n: torch.randn(s, generator=gen) for n, s in SHAPES.items()})


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    out = {}
    for name, (idx, vals) in _grads(seed).items():
        out[f"{name}.idx"] = idx.to(torch.int16)
        out[f"{name}.vals"] = vals
    return out


def _meta(**changes: object) -> dict[str, object]:
    meta: dict[str, object] = {"format_version": 1, "window": WINDOW, "uid": UID, "fingerprint": FP,
                               "codec": {"kind": "dct", "chunk": 64, "topk": 32}, "probe": dict(PROBE)}
    meta.update(changes)
    return meta


def _file(tensors: dict[str, torch.Tensor] | None = None, meta: object = None, metadata: dict | None = None) -> bytes:
    """A safetensors file; `meta` is the gauntlet JSON (a string is used verbatim)."""
    meta = _meta() if meta is None else meta
    text = meta if isinstance(meta, str) else json.dumps(meta)
    md = {"gauntlet": text} if metadata is None else metadata
    return safetensors.torch.save(_tensors() if tensors is None else tensors, metadata=md or None)


def _with_header(header: bytes, payload: bytes = b"", length: int | None = None) -> bytes:
    n = len(header) if length is None else length
    return n.to_bytes(8, "little") + header + payload


def _parse(data: bytes, max_bytes: int = CAP) -> Submission | Verdict:
    return parse_submission(data, window=WINDOW, uid=UID, spec=SPEC, max_bytes=max_bytes)


def _rejected(data: bytes, *words: str, reason: Reason = Reason.MALFORMED, max_bytes: int = CAP) -> str:
    out = _parse(data, max_bytes)
    assert isinstance(out, Verdict), "a bad file was accepted"
    assert (out.uid, out.reason, out.stage) == (UID, reason, "filter"), out
    for word in words:
        assert word in out.detail, out.detail
    return out.detail


def _edit(name: str, fn) -> dict[str, torch.Tensor]:
    t = _tensors()
    t[name] = fn(t[name].clone())
    return t


def test_valid_file_round_trips_exactly() -> None:
    grads = _grads(1)
    data = write_submission(WINDOW, UID, FP, CODEC, grads, PROBE)
    sub = _parse(data)
    assert isinstance(sub, Submission)
    assert (sub.window, sub.uid, sub.fingerprint, sub.size) == (WINDOW, UID, FP, len(data))
    assert sub.content_hash == hashlib.sha256(data).hexdigest()
    assert sub.probe == PROBE
    assert set(sub.grads) == set(SHAPES)
    for name, (idx, vals) in grads.items():
        got_idx, got_vals = sub.grads[name]
        assert got_idx.dtype == torch.int64 and got_vals.dtype == torch.float32
        assert torch.equal(got_idx, idx) and torch.equal(got_vals, vals)


def test_write_is_deterministic_and_small() -> None:
    a = write_submission(WINDOW, UID, FP, CODEC, _grads(2), PROBE)
    b = write_submission(WINDOW, UID, FP, CODEC, {n: _grads(2)[n] for n in reversed(list(SHAPES))}, dict(PROBE))
    assert a == b
    header = json.loads(a[8:8 + int.from_bytes(a[:8], "little")])
    assert header["layer.weight.idx"]["dtype"] == "I16"  # indices < 4096 are stored as int16
    assert a != write_submission(WINDOW, UID, FP, CODEC, _grads(3), PROBE)


@pytest.mark.parametrize("vals_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("idx_dtype", [torch.int32, torch.int64])
def test_wider_indices_and_half_values_are_accepted(idx_dtype: torch.dtype, vals_dtype: torch.dtype) -> None:
    t = {n: (v.to(idx_dtype) if n.endswith(".idx") else v.to(vals_dtype)) for n, v in _tensors().items()}
    sub = _parse(_file(t))
    assert isinstance(sub, Submission)
    idx, vals = sub.grads["layer.weight"]
    assert idx.dtype == torch.int64 and vals.dtype == torch.float32
    assert torch.equal(vals, t["layer.weight.vals"].float())


def test_write_refuses_inconsistent_input() -> None:
    with pytest.raises(ValueError, match="same non-empty set"):
        write_submission(WINDOW, UID, FP, CODEC, _grads(), {"layer.weight": [1.0, 2.0]})
    bad = _grads()
    bad["norm.weight"][1][0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        write_submission(WINDOW, UID, FP, CODEC, bad, PROBE)
    with pytest.raises(ValueError, match="two finite floats"):
        write_submission(WINDOW, UID, FP, CODEC, _grads(), {**PROBE, "odd.weight": [1.0]})


def test_model_spec_from_config_and_bad_shapes() -> None:
    spec = ModelSpec.build({"w": [128, 64]}, "fp", CodecConfig(chunk=64, topk=32))
    assert spec.shapes["w"] == (128, 64) and spec.layouts["w"].k == 32
    with pytest.raises(ValueError, match="1-D and 2-D"):
        ModelSpec({"w": (2, 2, 2)}, "fp", 64, 32)


def test_baseline_hand_built_file_is_valid() -> None:
    """The malformed files below are this file with one thing changed."""
    assert isinstance(_parse(_file()), Submission)


# --- the bytes are not a safetensors file ----------------------------------------------------

def test_oversize_file_is_refused_before_parsing() -> None:
    garbage = b"\xff" * 5000  # would fail every later check; the size check must come first
    _rejected(garbage, "5000 bytes, over the cap of 4096", max_bytes=4096)
    _rejected(_file(), "over the cap", max_bytes=len(_file()) - 1)
    assert isinstance(_parse(_file(), max_bytes=len(_file())), Submission)


def test_file_shorter_than_the_length_field() -> None:
    _rejected(b"\x10\x00\x00", "3 bytes: truncated")
    _rejected(b"", "0 bytes: truncated")


def test_truncated_inside_the_header() -> None:
    data = _file()
    _rejected(data[:40], "only 32 follow: truncated")


def test_truncated_inside_the_tensor_data() -> None:
    data = _file()
    _rejected(data[:-10], "safetensors refused the file")


def test_garbage_bytes() -> None:
    rng = random.Random(0)
    for _ in range(20):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(8, 3000)))
        _rejected(data)
    _rejected(_with_header(b"{\x93\xffnot json at all"), "not valid JSON")
    _rejected(_with_header(b"\x93\xffnot json at all"), "does not start with a JSON object")


def test_header_length_huge() -> None:
    _rejected(_with_header(b"{}", length=2**40), "says 1099511627776 bytes, over this model's cap")
    _rejected(_with_header(b"{}", length=SPEC.max_header_bytes + 1), "over this model's cap")


def test_header_cap_fits_the_model_and_never_exceeds_the_global_cap() -> None:
    """Real headers use well under a third of the cap; a model of thousands of tensors hits 4 MiB."""
    data = write_submission(WINDOW, UID, FP, CODEC, _grads(), PROBE)
    assert 3 * int.from_bytes(data[:8], "little") < SPEC.max_header_bytes < 16_384
    huge = ModelSpec({f"layer{i}.weight": (8,) for i in range(10_000)}, FP, 64, 32)
    assert huge.max_header_bytes == MAX_HEADER_BYTES


def test_header_json_broken() -> None:
    _rejected(_with_header(b'{"__metadata__": {"gauntlet": '), "the safetensors header is not valid JSON")


def test_header_json_deeply_nested_is_refused_not_crashing() -> None:
    _rejected(_with_header(b'{"a":' + b"[" * 3_000 + b"]" * 3_000 + b"}"), "not valid JSON", "RecursionError")


def test_header_with_duplicate_keys_is_refused() -> None:
    """Parsers differ on which duplicate they keep, so two readers could see different tensors."""
    entry = b'{"dtype":"F32","shape":[1],"data_offsets":[0,4]}'
    _rejected(_with_header(b'{"t":' + entry + b',"t":' + entry + b"}", b"\0" * 4), "duplicate key 't'")


def test_header_not_an_object() -> None:
    _rejected(_with_header(b"[1, 2, 3]"), "does not start with a JSON object")
    _rejected(_with_header(b' {"a": 1} '), "no gauntlet metadata")


def test_tensor_bytes_at_wrong_offsets() -> None:
    data = bytearray(_file())
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header["norm.weight.vals"]["data_offsets"] = header["layer.weight.vals"]["data_offsets"]
    raw = json.dumps(header).encode()
    _rejected(_with_header(raw, bytes(data[8 + n:])), "safetensors refused the file")


# --- a pickle is never unpickled ---------------------------------------------------------------

class _Payload:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("kind", ["torch-zip", "torch-legacy", "plain-pickle"])
def test_pickle_is_refused_without_running_it(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "upload.pt"
    payload = {"layer.weight": _Payload(marker)}
    if kind == "plain-pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=(kind == "torch-zip"))
    _rejected(path.read_bytes())
    assert not marker.exists(), "parsing a pickle ran its code"
    # the file really is hostile: loading it the reference's way runs the payload
    if kind == "plain-pickle":
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()


# --- metadata ----------------------------------------------------------------------------------

def test_missing_metadata() -> None:
    _rejected(_file(metadata={}), "no gauntlet metadata")
    _rejected(_file(metadata={"format": "pt"}), "no gauntlet metadata")


def test_extra_metadata_entries() -> None:
    _rejected(_file(metadata={"gauntlet": json.dumps(_meta()), "format": "pt"}), "exactly one string entry")


def test_metadata_json_broken() -> None:
    _rejected(_file(meta='{"format_version": 1, "window": '), "the gauntlet metadata is not valid JSON")
    _rejected(_file(meta="[1]"), "JSON list, not an object")


def test_metadata_nan_literal() -> None:
    text = json.dumps(_meta()).replace("0.25", "NaN")
    _rejected(_file(meta=text), "non-standard constant NaN")


def test_format_version_unsupported() -> None:
    _rejected(_file(meta=_meta(format_version=2)), "format_version 2 is not supported")
    _rejected(_file(meta=_meta(format_version=True)), "format_version true is not supported")


def test_metadata_missing_and_unknown_fields() -> None:
    meta = _meta()
    del meta["uid"]
    _rejected(_file(meta=meta), "missing fields ['uid']")
    _rejected(_file(meta=_meta(extra=1)), "unknown fields ['extra']")


@pytest.mark.parametrize(("field", "value"), [("window", "7"), ("uid", 3.0), ("fingerprint", 5), ("probe", [])])
def test_metadata_wrong_types(field: str, value: object) -> None:
    _rejected(_file(meta=_meta(**{field: value})), f"{field} has the wrong type")


def test_wrong_window() -> None:
    _rejected(_file(meta=_meta(window=WINDOW + 1)), "metadata says window 8 but the file was read from the key of window 7")


def test_wrong_uid() -> None:
    _rejected(_file(meta=_meta(uid=4)), "metadata says uid 4 but the file was read from the key of uid 3")


def test_wrong_fingerprint() -> None:
    _rejected(_file(meta=_meta(fingerprint="other-model")), "fingerprint 'other-model' does not match")


@pytest.mark.parametrize("codec", [{"chunk": 32, "topk": 32}, {"chunk": 64, "topk": 16}, {"chunk": 64},
                                   {"chunk": 64, "topk": 32, "x": 1}, {"chunk": 64.0, "topk": 32},
                                   {"chunk": 64, "topk": True}, {"chunk": 64, "topk": 32, "bins": 4}])
def test_wrong_codec_settings(codec: dict) -> None:
    _rejected(_file(meta=_meta(codec={"kind": "dct", **codec})),
              "do not match the validator's kind=dct chunk=64 topk=32")


@pytest.mark.parametrize("kind", [None, "sparseloco", "DCT", ["dct"]])
def test_a_file_of_another_codec_kind_is_named_as_such(kind: object) -> None:
    codec = {"chunk": 64, "topk": 32} if kind is None else {"kind": kind, "chunk": 64, "topk": 32}
    _rejected(_file(meta=_meta(codec=codec)), "but this validator reads 'dct' files (codec.kind)")


def test_missing_probe() -> None:
    probe = dict(PROBE)
    del probe["norm.weight"]
    _rejected(_file(meta=_meta(probe=probe)), "sync probe lacks 1 tensor(s), first 'norm.weight'")


def test_probe_for_unknown_tensor() -> None:
    _rejected(_file(meta=_meta(probe={**PROBE, "ghost": [1.0, 2.0]})), "unknown tensor 'ghost'")


@pytest.mark.parametrize("pair", ["[1.0]", "[1.0, 2.0, 3.0]", '[1.0, "2"]', "[1.0, true]", "1.0", "null"])
def test_probe_not_two_finite_numbers(pair: str) -> None:
    """Raw JSON spliced into the metadata."""
    text = json.dumps(_meta(probe={**PROBE, "odd.weight": "@@"})).replace('"@@"', pair)
    _rejected(_file(meta=text), "sync probe for 'odd.weight' must be two finite numbers")


@pytest.mark.parametrize(("pair", "words"), [("[1e999, 0.0]", "number '1e999' overflows a float"),
                                             ("[1" + "0" * 400 + ", 0]", "integer literal of 401 characters")])
def test_probe_numbers_refused_while_reading_json(pair: str, words: str) -> None:
    """1e999 would parse as inf and a 401-digit integer costs int() quadratic time: refused on sight."""
    text = json.dumps(_meta(probe={**PROBE, "odd.weight": "@@"})).replace('"@@"', pair)
    _rejected(_file(meta=text), "the gauntlet metadata is not valid JSON", words)


# --- tensors -----------------------------------------------------------------------------------

def test_unknown_tensor() -> None:
    t = _tensors()
    t["evil.payload"] = torch.zeros(4)
    _rejected(_file(t), "unknown tensor 'evil.payload' (not a parameter of the model)")


def test_missing_tensor() -> None:
    t = _tensors()
    del t["norm.weight.vals"]
    _rejected(_file(t), "missing tensor 'norm.weight.vals'")


@pytest.mark.parametrize(("name", "dtype", "shown"), [
    ("layer.weight.idx", torch.float32, "'F32'"), ("layer.weight.idx", torch.uint8, "'U8'"),
    ("norm.weight.vals", torch.int32, "'I32'"), ("norm.weight.vals", torch.float64, "'F64'"),
])
def test_wrong_dtype(name: str, dtype: torch.dtype, shown: str) -> None:
    _rejected(_file(_edit(name, lambda x: x.to(dtype))), f"tensor '{name}' has dtype {shown}; allowed")


def test_wrong_k() -> None:
    t = _tensors()
    t["layer.weight.idx"] = t["layer.weight.idx"][:, :31].contiguous()
    t["layer.weight.vals"] = t["layer.weight.vals"][:, :31].contiguous()
    _rejected(_file(t), "'layer.weight.idx' has shape [2, 31]; expected [2, 32]", "k = min(topk 32, 4096) = 32")


def test_k_capped_by_small_chunks() -> None:
    """odd.weight (3, 5) has 15 elements per chunk, so k is 15, not topk = 32."""
    t = _tensors()
    t["odd.weight.idx"] = torch.arange(32, dtype=torch.int16).view(1, 32)
    t["odd.weight.vals"] = torch.ones(1, 32)
    _rejected(_file(t), "'odd.weight.idx' has shape [1, 32]; expected [1, 15]")


def test_wrong_number_of_chunks_and_rank() -> None:
    t = _tensors()
    t["layer.weight.vals"] = t["layer.weight.vals"].reshape(-1)
    _rejected(_file(t), "'layer.weight.vals' has shape [64]; expected [2, 32]")


@pytest.mark.parametrize("bad", [4096, -1, 32767])
def test_index_out_of_range(bad: int) -> None:
    def poke(idx: torch.Tensor) -> torch.Tensor:
        idx[1, 5] = bad
        return idx
    _rejected(_file(_edit("layer.weight.idx", poke)), f"index {bad} in chunk 1 is outside [0, 4096)")


def test_index_out_of_range_in_a_small_chunk() -> None:
    def poke(idx: torch.Tensor) -> torch.Tensor:
        idx[0, 0] = 48
        return idx
    _rejected(_file(_edit("norm.weight.idx", poke)), "'norm.weight.idx': index 48 in chunk 0 is outside [0, 48)")


def test_duplicate_index_in_a_chunk() -> None:
    def poke(idx: torch.Tensor) -> torch.Tensor:
        idx[1, 7] = idx[1, 3]
        return idx
    t = _edit("layer.weight.idx", poke)
    _rejected(_file(t), f"index {int(t['layer.weight.idx'][1, 3])} appears twice in chunk 1")


def test_same_index_in_different_chunks_is_fine() -> None:
    t = _tensors()
    t["layer.weight.idx"] = torch.arange(32, dtype=torch.int16).repeat(2, 1)
    assert isinstance(_parse(_file(t)), Submission)


@pytest.mark.parametrize(("value", "words"), [(float("nan"), "1 NaN and 0 Inf"), (float("inf"), "0 NaN and 1 Inf"),
                                              (float("-inf"), "0 NaN and 1 Inf")])
def test_non_finite_values(value: float, words: str) -> None:
    def poke(vals: torch.Tensor) -> torch.Tensor:
        vals[0, 2] = value
        return vals
    _rejected(_file(_edit("norm.weight.vals", poke)), "'norm.weight.vals' holds", words, reason=Reason.NON_FINITE)


def test_inf_in_bfloat16_values() -> None:
    t = _tensors()
    vals = t["odd.weight.vals"].to(torch.bfloat16)
    vals[0, 0] = float("inf")
    t["odd.weight.vals"] = vals
    _rejected(_file(t), "'odd.weight.vals' holds 0 NaN and 1 Inf", reason=Reason.NON_FINITE)


def test_file_on_disk_round_trip(tmp_path: Path) -> None:
    path = tmp_path / f"{UID}.safetensors"
    path.write_bytes(write_submission(WINDOW, UID, FP, CODEC, _grads(), PROBE))
    assert isinstance(_parse(path.read_bytes()), Submission)


def test_mutated_files_never_raise() -> None:
    """Random byte flips and truncations of a valid file: always a Submission or a Verdict."""
    good = _file()
    rng = random.Random(1)
    outcomes = set()
    for trial in range(300):
        data = bytearray(good)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if trial % 3 == 0:
            data = data[: rng.randrange(len(data))]
        out = _parse(bytes(data))
        assert isinstance(out, (Submission, Verdict))
        outcomes.add(type(out).__name__ if isinstance(out, Submission) else str(out.reason))
    assert str(Reason.MALFORMED) in outcomes


def test_non_bytes_input_is_a_caller_error() -> None:
    with pytest.raises(TypeError, match="needs bytes"):
        parse_submission(bytearray(_file()), window=WINDOW, uid=UID, spec=SPEC, max_bytes=CAP)  # type: ignore[arg-type]


def test_parse_allocates_no_more_than_the_file_implies() -> None:
    """A header claiming a huge tensor is refused by shape before any allocation."""
    header = {"__metadata__": {"gauntlet": json.dumps(_meta())}}
    for name, lay in SPEC.layouts.items():
        for part, dtype in (("idx", "I16"), ("vals", "F32")):
            header[f"{name}.{part}"] = {"dtype": dtype, "shape": [lay.n_chunks, lay.k], "data_offsets": [0, 0]}
    header["layer.weight.vals"]["shape"] = [2**40, 32]
    _rejected(_with_header(json.dumps(header).encode()), "has shape [1099511627776, 32]; expected [2, 32]")


def test_an_unforeseen_parser_error_is_a_validator_fault_not_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in the checks must not stop the window, nor be blamed on the peer."""
    def broken(*args: object) -> None:
        raise RuntimeError("a bug\nin the checks")

    monkeypatch.setattr(submission, "read_pair", broken)
    out = _parse(write_submission(WINDOW, UID, FP, CODEC, _grads(), PROBE))
    assert isinstance(out, Verdict) and out.reason is Reason.INTERNAL_ERROR and out.blame == "validator"
    assert out.detail.startswith("internal error in filter (RuntimeError)")


def test_extreme_values_at_the_bound_pass_and_beyond_it_are_refused() -> None:
    at = _edit("norm.weight.vals", lambda v: v.sign() * MAX_ABS_VALUE)
    assert isinstance(_parse(_file(at)), Submission)
    beyond = _edit("norm.weight.vals", lambda v: v * 0 + 3e38)
    _rejected(_file(beyond), "tensor 'norm.weight.vals': value 3e+38 in chunk 0 is beyond +-1e+09 (32 such entries")
    with pytest.raises(ValueError, match="over MAX_ABS_VALUE"):
        write_submission(WINDOW, UID, FP, CODEC, {**_grads(), "norm.weight": (_grads()["norm.weight"][0],
                                                                               torch.full((1, 32), 2e9))}, PROBE)
