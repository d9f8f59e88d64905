"""SparseLoCo (top-64 per raw 64x64 chunk, 2-bit values, 12-bit indices) against DCT top-32 on
one honest update of the `tiny` model: bytes on the wire and how much of the update survives.

The update is a real one: the mean gradient of an honest miner's own pages (the local network's
settings) times the window's learning rate. Figures:

- bytes: the file `write_submission` writes (safetensors with the sync probe and metadata; for
  SparseLoCo the three wire parts per parameter) and the tensor payload alone;
- cosine: cos(decoded update, dense update) over all parameters at once (the gradient-score
  proxy), plus the median per tensor; an 8-bit SparseLoCo (256 bins, the reference's old
  default) separates the cost of top-k from the cost of 2-bit values;
- steady state: WINDOWS windows on fresh pages with each codec's own memory (DCT: the miner's
  momentum 0.999 with error feedback; SparseLoCo: error feedback with decay 0.95), then the same
  cosines against the buffer the last window compressed and against that window's own gradient;
- the index overlap of honest peers (window 0, six uids), which the copy thresholds act on;
- scores: the validator's gradient score s_k (scoring.score_peers, theta - 0.2 lr sign(delta) on
  the window's random pages) of honest updates as a validator receives them: each miner's file
  (gauntlet.miner.pseudo_gradient, then write_submission), parsed under the network's ModelSpec
  and decoded by make_codec's codec, for SCORE_UIDS peers in window 0 and after WINDOWS windows;
  the uncompressed update's score is the ceiling. Ratios are SparseLoCo over DCT.

Run: `.venv/bin/python -m benchmarks.bench_sparseloco` (a minute on one CPU thread).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from gauntlet.codec import DCTCodec, make_codec
from gauntlet.config import CodecConfig, GauntletConfig, load_config
from gauntlet.data import Corpus, load_tokenizer, page_batches, random_pages
from gauntlet.filter import probe_values
from gauntlet.miner import MinerState, mean_gradient, own_pages, pseudo_gradient
from gauntlet.model import build_model, model_fingerprint
from gauntlet.prepare import prepare
from gauntlet.schedule import lr_at
from gauntlet.scoring import LossEvaluator, score_peers
from gauntlet.sparseloco import SparseLoCoCodec
from gauntlet.submission import ModelSpec, Submission, parse_submission, write_submission
from gauntlet.uniqueness import overlap_matrix

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
RESULTS = HERE / "results" / "sparseloco.json"
WINDOWS = 8
"""Past the local network's error_feedback_after (5), so the DCT miner's error feedback is on too."""
UID = 3
OVERLAP_UIDS = (0, 1, 2, 3, 4, 5)
SCORE_UIDS = (1, 2, 3, 4)
CODECS = {"dct_top32": CodecConfig(kind="dct", chunk=64, topk=32),
          "sparseloco_top64_2bit": CodecConfig(kind="sparseloco", chunk=64, topk=64)}
"""The paper's codec and templar-2026's, as their presets set them."""


def _cos(a: Tensor, b: Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def _cosines(decoded: Mapping[str, Tensor], dense: Mapping[str, Tensor]) -> dict[str, float]:
    names = sorted(dense)
    whole = _cos(torch.cat([decoded[n].flatten() for n in names]), torch.cat([dense[n].flatten() for n in names]))
    return {"cosine": round(whole, 4),
            "cosine_median_per_tensor": round(statistics.median(_cos(decoded[n], dense[n]) for n in names), 4)}


def _payload(tensors: Mapping[str, Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _setup() -> tuple[GauntletConfig, object, Corpus, torch.nn.Module]:
    data = prepare(None, WORK / "data" / "corpus", WORK / "data" / "tokenizer")
    cfg = load_config(ROOT / "deployments" / "local.toml",
                      overrides={"data": {"corpus": str(data.corpus), "tokenizer": str(data.tokenizer)}})
    tok = load_tokenizer(cfg.data.tokenizer)
    return cfg, tok, Corpus(cfg.data.corpus), build_model("tiny", len(tok), cfg.model.init_seed)


def _updates(cfg: GauntletConfig, tok: object, corpus: Corpus, model: torch.nn.Module) -> list[dict[str, Tensor]]:
    """lr_W * g_W for windows 0..WINDOWS-1 on the miner's own pages (the model held fixed)."""
    out = []
    for w in range(WINDOWS):
        grad = mean_gradient(model, page_batches(corpus, tok, own_pages(UID, w, corpus, cfg), cfg.data))
        out.append({n: lr_at(w, cfg.schedule) * g for n, g in grad.items()})
    return out


def _first_window(cfg: GauntletConfig, model: torch.nn.Module, update: dict[str, Tensor], vocab: int) -> dict:
    probe = probe_values({n: p.detach() for n, p in model.named_parameters()}, cfg.filter.probe_elements)
    shapes = {n: tuple(u.shape) for n, u in update.items()}
    dct = DCTCodec(64, 32)
    compressed = dct.encode_all(update)
    dct_file = write_submission(0, UID, model_fingerprint("tiny", vocab, cfg.model.init_seed, 64, 32),
                                dct, compressed, probe)
    dct_tensors = {f"{n}.{p}": t for n, (i, v) in compressed.items() for p, t in (("idx", i.to(torch.int16)),
                                                                                  ("vals", v))}
    out = {"dct_top32": {"file_bytes": len(dct_file), "payload_bytes": _payload(dct_tensors),
                         **_cosines(dct.decode_all(compressed, shapes), update)}}
    for label, bins in (("sparseloco_top64_2bit", 4), ("sparseloco_top64_8bit", 256)):
        codec = SparseLoCoCodec(64, 64, bins=bins)
        quantized = {n: codec.encode_q(u) for n, u in update.items()}
        wire = {n: q.pack() for n, q in quantized.items()}
        file = write_submission(0, UID, "tiny-fingerprint", codec, quantized, probe)
        decoded = {n: codec.decode(q.idx, q.vals, shapes[n]) for n, q in quantized.items()}
        out[label] = {"file_bytes": len(file), "payload_bytes": sum(_payload(w) for w in wire.values()),
                      **_cosines(decoded, update)}
    for kind in ("file_bytes", "payload_bytes"):
        out[f"ratio_{kind}_sparseloco_2bit_over_dct"] = round(
            out["sparseloco_top64_2bit"][kind] / out["dct_top32"][kind], 4)
    return out


def _steady_state(cfg: GauntletConfig, updates: list[dict[str, Tensor]]) -> dict:
    """Both miners over WINDOWS windows; cosines of the last window's sent update."""
    shapes = {n: tuple(u.shape) for n, u in updates[0].items()}
    dct, state = DCTCodec(64, 32), MinerState(uid=UID)
    sl, buffers = SparseLoCoCodec(64, 64), {}
    for w, update in enumerate(updates):
        last = w == len(updates) - 1
        if last:
            # the DCT miner's momentum before this window's compression: m * 0.999 + update
            before_dct = {n: m * cfg.codec.momentum + update[n] for n, m in state.momentum.items()}
            before_sl = {n: e * sl.ef_decay + update[n] for n, e in buffers.items()}
        compressed = pseudo_gradient(state, {n: u / lr_at(w, cfg.schedule) for n, u in update.items()},
                                     lr_at(w, cfg.schedule), dct, cfg.codec.momentum, cfg.codec.error_feedback_after)
        sent = sl.feedback_step(buffers, update)
    dct_dec = dct.decode_all(compressed, shapes)
    sl_dec = {n: sl.decode(q.idx, q.vals, shapes[n]) for n, q in sent.items()}
    return {"windows": len(updates), "error_feedback_after_dct": cfg.codec.error_feedback_after,
            "dct_top32": {"vs_buffer": _cosines(dct_dec, before_dct),
                          "vs_window_update": _cosines(dct_dec, updates[-1])},
            "sparseloco_top64_2bit": {"vs_buffer": _cosines(sl_dec, before_sl),
                                      "vs_window_update": _cosines(sl_dec, updates[-1])}}


def _overlaps(cfg: GauntletConfig, tok: object, corpus: Corpus, model: torch.nn.Module) -> dict:
    """Index overlap between honest peers' window-0 updates, what the copy thresholds act on."""
    updates = {}
    for uid in OVERLAP_UIDS:
        grad = mean_gradient(model, page_batches(corpus, tok, own_pages(uid, 0, corpus, cfg), cfg.data))
        updates[uid] = {n: lr_at(0, cfg.schedule) * g for n, g in grad.items()}
    out = {"peers": len(OVERLAP_UIDS)}
    for label, codec in (("dct_top32", DCTCodec(64, 32)), ("sparseloco_top64_2bit", SparseLoCoCodec(64, 64))):
        _, overlap = overlap_matrix({u: codec.encode_all(upd) for u, upd in updates.items()})
        pairs = overlap[~torch.eye(len(OVERLAP_UIDS), dtype=torch.bool)]
        out[label] = {"min": round(float(pairs.min()), 4), "median": round(float(pairs.median()), 4),
                      "max": round(float(pairs.max()), 4)}
    return out


def _sig(x: float) -> float:
    """Four significant digits (window 0's scores are ~1e-5: fixed decimals would erase them)."""
    return float(f"{x:.4g}")


def _received(codec_cfg: CodecConfig, model: torch.nn.Module, uid: int, window: int,
              data: bytes) -> dict[str, Tensor]:
    """The dense delta the validator decodes from a peer's file (parsed under the network's spec)."""
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    spec = ModelSpec.build(shapes, "tiny-fingerprint", codec_cfg)
    sub = parse_submission(data, window=window, uid=uid, spec=spec, max_bytes=2**30)
    if not isinstance(sub, Submission):
        raise RuntimeError(f"the validator refused an honest {codec_cfg.kind} file: {sub.detail}")
    return spec.codec.decode_all(sub.grads, shapes)


def _scores(cfg: GauntletConfig, tok: object, corpus: Corpus, model: torch.nn.Module) -> dict:
    """s_k of honest updates under both codecs (window 0 and window WINDOWS - 1, model held fixed)."""
    n_pages = corpus.n_pages(cfg.data.rows_per_page)
    probe = probe_values({n: p.detach() for n, p in model.named_parameters()}, cfg.filter.probe_elements)
    evaluator = LossEvaluator(model)
    rows: dict[str, dict[str, list[float]]] = {}
    states = {label: {uid: MinerState(uid) for uid in SCORE_UIDS} for label in CODECS}
    for w in range(WINDOWS):
        scored = w in (0, WINDOWS - 1)
        rand = page_batches(corpus, tok, random_pages(1000 + w, cfg.scoring.random_pages, n_pages), cfg.data)
        lr = lr_at(w, cfg.schedule)
        for uid in SCORE_UIDS:
            own = page_batches(corpus, tok, own_pages(uid, w, corpus, cfg), cfg.data)
            grad = mean_gradient(model, own)
            deltas = {"uncompressed": {n: lr * g for n, g in grad.items()}}
            for label, codec_cfg in CODECS.items():
                codec = make_codec(codec_cfg)
                sent = pseudo_gradient(states[label][uid], grad, lr, codec, cfg.codec.momentum,
                                       cfg.codec.error_feedback_after)
                deltas[label] = _received(codec_cfg, model, uid, w,
                                          write_submission(w, uid, "tiny-fingerprint", codec, sent, probe))
            if scored:
                for label, delta in deltas.items():
                    s = score_peers(evaluator, {uid: delta}, {uid: own}, rand, cfg.scoring.eval_lr_factor * lr)[uid]
                    rows.setdefault(f"window_{w}", {}).setdefault(label, []).append(s.gradient_score)
    out: dict = {"peers": list(SCORE_UIDS), "eval_lr_factor": cfg.scoring.eval_lr_factor}
    for key, by_label in rows.items():
        summary = {label: {"gradient_score_median": _sig(statistics.median(v)),
                           "gradient_score_mean": _sig(statistics.fmean(v)),
                           "per_peer": [_sig(x) for x in v]} for label, v in by_label.items()}
        dct, sl = (statistics.median(by_label[k]) for k in CODECS)
        summary["ratio_median_sparseloco_over_dct"] = round(sl / dct, 4) if dct else None
        out[key] = summary
    return out


def main() -> dict:
    torch.set_num_threads(1)
    cfg, tok, corpus, model = _setup()
    updates = _updates(cfg, tok, corpus, model)
    result = {"model": "tiny", "parameters": sum(u.numel() for u in updates[0].values()),
              "tensors": len(updates[0]), "uid": UID,
              "first_window": _first_window(cfg, model, updates[0], len(tok)),
              "steady_state": _steady_state(cfg, updates),
              "honest_index_overlap": _overlaps(cfg, tok, corpus, model),
              "scores": _scores(cfg, tok, corpus, model)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
