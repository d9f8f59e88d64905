"""SparseLoCo submission files: the writer/parser round trip, the miner's feedback step, and one
hostile file per check with its own verdict (the codec's own checks are in test_sparseloco.py)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import safetensors.torch
import torch

from gauntlet.codec import DCTCodec, _to_chunks, make_codec
from gauntlet.config import CodecConfig, ConfigError, load_config, with_overrides
from gauntlet.miner import MinerState, pseudo_gradient
from gauntlet.payload import corrupt_parts
from gauntlet.sparseloco import Quantized, SparseLoCoCodec
from gauntlet.submission import META_KEY, ModelSpec, Submission, parse_submission, write_submission
from gauntlet.verdicts import Reason, Verdict

CODEC = SparseLoCoCodec(chunk=64, topk=64)
# 2 chunks of 4096 (k = 64), 1 chunk of 48 (k = 48), 1 chunk of 15 (k = 15: an odd count of indices).
SHAPES = {"layer.weight": (128, 64), "norm.weight": (48,), "odd.weight": (3, 5)}
FP = "fp-tiny-sl"
SPEC = ModelSpec(SHAPES, FP, 64, 64, kind="sparseloco", bins=4)
WINDOW, UID, CAP = 5, 2, 2**20
PROBE = {"layer.weight": [0.25, -0.5], "norm.weight": [1.0, 1.0], "odd.weight": [1e-3, 2e-3]}


def _dense(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.randn(s, generator=gen) for n, s in SHAPES.items()}


def _quantized(seed: int = 0) -> dict[str, Quantized]:
    return {n: CODEC.encode_q(x) for n, x in _dense(seed).items()}


def _valid(seed: int = 0) -> bytes:
    return write_submission(WINDOW, UID, FP, CODEC, _quantized(seed), PROBE)


def _parse(data: bytes, spec: ModelSpec = SPEC) -> Submission | Verdict:
    return parse_submission(data, window=WINDOW, uid=UID, spec=spec, max_bytes=CAP)


def _parts(data: bytes) -> tuple[dict[str, torch.Tensor], dict]:
    n = int.from_bytes(data[:8], "little")
    meta = json.loads(json.loads(data[8:8 + n])["__metadata__"][META_KEY])
    return safetensors.torch.load(data), meta


def _rebuilt(tensors: dict[str, torch.Tensor], meta: dict) -> bytes:
    return safetensors.torch.save(tensors, metadata={META_KEY: json.dumps(meta)})


def _edit(name: str, change: Callable[[torch.Tensor], torch.Tensor]) -> bytes:
    tensors, meta = _parts(_valid())
    tensors[name] = change(tensors[name].clone())
    return _rebuilt(tensors, meta)


def _rejected(data: bytes, *words: str, reason: Reason = Reason.MALFORMED, spec: ModelSpec = SPEC) -> str:
    out = _parse(data, spec)
    assert isinstance(out, Verdict), "a hostile SparseLoCo file was accepted"
    assert (out.uid, out.reason, out.stage) == (UID, reason, "filter"), out
    for word in words:
        assert word in out.detail, out.detail
    return out.detail


def test_round_trip_is_exact_and_within_the_quantisation_bounds() -> None:
    dense, quantized = _dense(), _quantized()
    data = write_submission(WINDOW, UID, FP, CODEC, quantized, PROBE)
    assert data == write_submission(WINDOW, UID, FP, CODEC, quantized, PROBE)  # canonical bytes
    sub = _parse(data)
    assert isinstance(sub, Submission) and sub.probe == PROBE
    for name, x in dense.items():
        idx, vals = sub.grads[name]
        q = quantized[name]
        assert torch.equal(idx, q.idx) and torch.equal(vals, q.vals)  # what the miner's feedback subtracted
        exact = _to_chunks(x, CODEC.layout(x.shape)).gather(-1, idx)  # the true top-k values (C, k)
        err = (vals - exact).abs()
        scale = float(q.qparams[1])
        # An inner level's values all lie within one bin width of the level (its bin's mean). The
        # outer two are open-ended; for Gaussian data a real top-k (1.6 % kept: the tails, ~12 %
        # error measured) stays under 20 % relative error, a chunk kept whole (4 levels for
        # a bell curve: 30-48 %) under 50 %.
        inner = (q.codes == 1) | (q.codes == 2)
        assert bool((err[inner] <= scale * (1 + 1e-5)).all()), name
        lay = CODEC.layout(x.shape)
        bound = 0.2 if lay.k * 8 <= lay.chunk_elems else 0.5
        assert float(err.norm()) <= bound * float(exact.norm()), (name, float(err.norm() / exact.norm()))
        dense = CODEC.decode(idx, vals, x.shape)
        assert int((dense != 0).sum()) <= idx.numel()  # nothing outside the kept positions
    meta = _parts(data)[1]
    assert meta["codec"] == {"kind": "sparseloco", "chunk": 64, "topk": 64, "bins": 4}


def test_file_size_is_the_packed_size() -> None:
    data = _valid()
    header = int.from_bytes(data[:8], "little")
    n = {name: CODEC.layout(s).n_chunks * CODEC.layout(s).k for name, s in SHAPES.items()}
    body = sum(3 * ((v + 1) // 2) + (v + 3) // 4 + 4 * (2 + 4) for v in n.values())
    assert len(data) == 8 + header + body


def test_a_plain_pair_is_quantised_afresh_and_parses() -> None:
    pairs = {n: (q.idx, -2.0 * q.vals) for n, q in _quantized().items()}  # what a sign_flip peer sends
    sub = _parse(write_submission(WINDOW, UID, FP, CODEC, pairs, PROBE))
    assert isinstance(sub, Submission)
    for name, (idx, vals) in pairs.items():
        got_idx, got_vals = sub.grads[name]
        assert torch.equal(got_idx, idx)
        torch.testing.assert_close(got_vals, vals, rtol=0, atol=float(vals.abs().max()) * 0.5)


def test_the_writer_refuses_what_the_validator_would() -> None:
    q = _quantized()
    with pytest.raises(ValueError, match="NaN or Inf"):
        write_submission(WINDOW, UID, FP, CODEC, {**q, "odd.weight": (q["odd.weight"].idx, torch.full((1, 15), float("nan")))}, PROBE)
    with pytest.raises(ValueError, match="12-bit indices"):
        write_submission(WINDOW, UID, FP, CODEC, {**q, "odd.weight": (q["odd.weight"].idx + 5000, q["odd.weight"].vals)}, PROBE)


def test_miner_feedback_decays_from_the_first_window() -> None:
    state, lr = MinerState(uid=1), 0.5
    g1, g2 = _dense(1), _dense(2)
    first = pseudo_gradient(state, g1, lr, CODEC, momentum=0.999, error_feedback_after=5)
    for name, q in first.items():
        assert isinstance(q, Quantized)
        sent = CODEC.decode(q.idx, q.vals, SHAPES[name])
        torch.testing.assert_close(state.momentum[name], lr * g1[name] - sent)  # feedback in window 0
    before = {n: e.clone() for n, e in state.momentum.items()}
    second = pseudo_gradient(state, g2, lr, CODEC, momentum=0.999, error_feedback_after=5)
    for name, q in second.items():
        e = CODEC.ef_decay * before[name] + lr * g2[name]
        assert torch.equal(q.idx, CODEC.encode_q(e).idx)
        torch.testing.assert_close(state.momentum[name], e - CODEC.decode(q.idx, q.vals, SHAPES[name]))
    assert state.windows_trained == 2 and len(state.history) == 2
    sub = _parse(write_submission(WINDOW, UID, FP, CODEC, second, PROBE))
    assert all(torch.equal(sub.grads[n][1], q.vals) for n, q in second.items())  # sent as subtracted


def test_config_builds_the_codec_and_refuses_wide_chunks() -> None:
    cfg = load_config(preset="templar-2026")
    codec = make_codec(cfg.codec)
    assert isinstance(codec, SparseLoCoCodec) and (codec.topk, codec.bins, codec.ef_decay) == (64, 4, 0.95)
    assert isinstance(make_codec(load_config(preset="paper").codec), DCTCodec)
    spec = ModelSpec.build(SHAPES, FP, cfg.codec)
    assert (spec.kind, spec.bins, spec.codec.kind) == ("sparseloco", 4, "sparseloco")
    with pytest.raises(ConfigError, match="chunk <= 64"):
        with_overrides(cfg, ["codec.chunk=128"])
    with pytest.raises(ValueError, match="make_codec"):
        DCTCodec.from_config(CodecConfig(kind="sparseloco"))


# --- hostile files: each check has its own verdict ----------------------------------------------


def test_a_sparseloco_file_sent_to_a_dct_validator_and_back() -> None:
    dct_spec = ModelSpec(SHAPES, FP, 64, 64)
    _rejected(_valid(), "codec kind 'sparseloco' but this validator reads 'dct' files", spec=dct_spec)
    dct_file = write_submission(WINDOW, UID, FP, DCTCodec(64, 64), DCTCodec(64, 64).encode_all(_dense()), PROBE)
    _rejected(dct_file, "codec kind 'dct' but this validator reads 'sparseloco' files")


@pytest.mark.parametrize("codec", [{"bins": 8}, {"topk": 32}, {"bins": 4.0}, {"range_sigmas": 6.0}])
def test_codec_settings_that_differ(codec: dict) -> None:
    tensors, meta = _parts(_valid())
    meta["codec"] = {**meta["codec"], **codec}
    _rejected(_rebuilt(tensors, meta), "do not match the validator's kind=sparseloco chunk=64 topk=64 bins=4")


def test_dct_parts_in_a_sparseloco_file() -> None:
    tensors, meta = _parts(_valid())
    del tensors["odd.weight.codes"], tensors["odd.weight.qparams"]
    tensors["odd.weight.vals"] = torch.zeros(1, 15)
    _rejected(_rebuilt(tensors, meta), "unknown tensor 'odd.weight.vals'", "holds idx, codes, qparams")


@pytest.mark.parametrize(("name", "change", "words"), [
    ("layer.weight.idx", lambda t: t[:-3], "has shape [189]; expected [192]"),
    ("norm.weight.codes", lambda t: torch.cat([t, t[:1]]), "has shape [13]; expected [12]"),
    ("odd.weight.qparams", lambda t: t[:4], "has shape [4]; expected [6]"),
    ("norm.weight.codes", lambda t: t.to(torch.int8), "has dtype 'I8'; allowed: U8"),
    ("odd.weight.qparams", lambda t: t.to(torch.float16), "has dtype 'F16'; allowed: F32"),
])
def test_lengths_and_dtypes_from_the_header(name: str, change: Callable, words: str) -> None:
    _rejected(_edit(name, change), words)


def _set_index(t: torch.Tensor, position: int, value: int) -> torch.Tensor:
    """Rewrite one 12-bit index inside the packed bytes (pairs as a + 4096 * b, little-endian)."""
    word = t.view(-1, 3).to(torch.int64)
    pair, half = divmod(position, 2)
    w = int(word[pair, 0]) | int(word[pair, 1]) << 8 | int(word[pair, 2]) << 16
    w = (w & ~(0xFFF << 12 * half)) | value << 12 * half
    word[pair] = torch.tensor([w & 0xFF, (w >> 8) & 0xFF, w >> 16])
    return word.to(torch.uint8).reshape(-1)


def test_packed_index_outside_the_chunk() -> None:
    _rejected(_edit("odd.weight.idx", lambda t: _set_index(t, 14, 4000)), "'odd.weight.idx': index 4000 in chunk 0",
              "outside [0, 15)")


def test_packed_indices_repeated() -> None:
    _rejected(_edit("norm.weight.idx", lambda t: _set_index(t, 1, 0)), "strictly ascending")


def test_packed_padding_index_after_an_odd_count() -> None:
    _rejected(_edit("odd.weight.idx", lambda t: _set_index(t, 15, 7)), "padding index after an odd count is 7")


def test_padding_codes_must_be_zero() -> None:
    def pad(t: torch.Tensor) -> torch.Tensor:
        t[-1] |= 0b11 << 6  # odd.weight: 15 codes, the 16th 2-bit slot is padding
        return t
    _rejected(_edit("odd.weight.codes", pad), "padding code(s) after the last value must be 0")


def test_level_code_beyond_the_bins() -> None:
    codec3 = SparseLoCoCodec(chunk=64, topk=64, bins=3)  # 2-bit codes, so code 3 is writable and wrong
    spec3 = ModelSpec(SHAPES, FP, 64, 64, kind="sparseloco", bins=3)
    tensors, meta = _parts(write_submission(WINDOW, UID, FP, codec3, codec3.encode_all(_dense()), PROBE))
    tensors["norm.weight.codes"][0] |= 0b11
    _rejected(_rebuilt(tensors, meta), "level code 3 at value 0 is outside [0, 3)", spec=spec3)


@pytest.mark.parametrize(("where", "value", "reason", "words"), [
    (0, float("nan"), Reason.NON_FINITE, "holds NaN or Inf"),
    (3, float("inf"), Reason.NON_FINITE, "holds NaN or Inf"),
    (1, 0.0, Reason.MALFORMED, "scale is 0.0; it must be > 0"),
    (0, 3e38, Reason.MALFORMED, "value 3e+38 in chunk 0 is beyond +-1e+09"),
    (0, 1e12, Reason.MALFORMED, "is beyond +-1e+09"),
])
def test_quantisation_parameters(where: int, value: float, reason: Reason, words: str) -> None:
    def change(t: torch.Tensor) -> torch.Tensor:
        t[where] = value
        return t
    _rejected(_edit("layer.weight.qparams", change), "'layer.weight.qparams'", words, reason=reason)


def test_lookup_for_an_unused_level() -> None:
    codes = _parts(_valid())[0]["norm.weight.codes"]
    used = torch.stack([(codes >> s) & 3 for s in (0, 2, 4, 6)]).unique().tolist()
    unused = next(level for level in range(4) if level not in used) if len(used) < 4 else None
    if unused is None:  # every level used: make level 3 unused by moving its values to level 2
        def drop3(t: torch.Tensor) -> torch.Tensor:
            out = torch.zeros_like(t)
            for s in (0, 2, 4, 6):
                c = (t >> s) & 3
                out |= torch.where(c == 3, torch.full_like(c, 2), c) << s
            return out
        tensors, meta = _parts(_edit("norm.weight.codes", drop3))
        unused = 3
    else:
        tensors, meta = _parts(_valid())
    tensors["norm.weight.qparams"][2 + unused] = 0.5
    _rejected(_rebuilt(tensors, meta), f"lookup[{unused}] is 0.5 but no value uses level {unused}")


@pytest.mark.parametrize(("fault", "reason", "words"), [
    ("nan", Reason.NON_FINITE, "'layer.weight.qparams' holds NaN or Inf"),
    ("index_out_of_range", Reason.MALFORMED, "'norm.weight.idx': index 48 in chunk 0 is outside [0, 48)"),
])
def test_the_local_networks_corruptions_fit_either_codec(fault: str, reason: Reason, words: str) -> None:
    tensors, meta = _parts(_valid())
    corrupt_parts(tensors, fault, SPEC.codec, SPEC.layouts)
    _rejected(_rebuilt(tensors, meta), words, reason=reason)
    dct, dct_spec = DCTCodec(64, 32), ModelSpec(SHAPES, FP, 64, 32)
    tensors, meta = _parts(write_submission(WINDOW, UID, FP, dct, dct.encode_all(_dense()), PROBE))
    corrupt_parts(tensors, fault, dct_spec.codec, dct_spec.layouts)
    _rejected(_rebuilt(tensors, meta), "'layer.weight.", reason=reason, spec=dct_spec)
