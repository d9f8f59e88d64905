"""Stage 2 against its floor, its memory, screening, and the cost model's projection to 1.2B.

1. The CPU's matmul rate: a (batch * seq_len, hidden) @ (hidden, 4 * hidden) float32 product at
   the model's hidden size, one thread. It is the `device_flops` of the floor.
2. `scoring_efficiency_<size>`: `score_peers` (the validator's scorer) on the local network's
   data settings, measured time over the forward-pass floor of the tokens it forwarded
   (`gauntlet.costmodel`), the matmul rate measured just before and after each run; where the
   time goes (`time_breakdown`: matmuls, log-softmax, attention, other); `per_peer_time_spread`:
   the time per peer at 4, 16 and 64 peers on `tiny`, as the spread max / min - 1 (issue 14's
   "flat within 15%" is a spread <= 0.15; the shared random-before is amortised, nothing else
   should change), over two rounds of the three counts in alternating order (4, 16, 64, then
   64, 16, 4) so that the neighbours' drifting load falls on every count alike.
3. `peak_memory_growth_per_peer`: the peak resident memory of scoring with a fresh dense delta
   per peer (as decoding makes), at 2 and at 10 peers, as a fraction of one delta's bytes.
4. Screening on `tiny` after TRAIN_STEPS AdamW steps: honest peers (real gradients through the
   codec) and hostile ones; Spearman and top-G overlap of estimated against exact s_k, the same
   for the screened result (exact where chosen, calibrated elsewhere), and the speed-up of the
   screened pipeline over exact scoring of every peer.
5. The cost model at 1.2B on one H200 (989 TFLOP/s bf16 dense, 40% MFU): peers per 96 s
   window, and GPUs for a 250-peer window with and without screening.
6. `gpu_peers_per_window` and `gpu_mfu`: `benchmarks.scoring_gpu` on the 1.2B model in bf16 when a
   CUDA device is present (None and the reason otherwise).
7. `codec_share_small`: parsing and decoding a file's share of scoring a peer on `small`, on
   files the configured codec wrote (`bench_window`'s `codec_share` is the real stage on `tiny`).

The set-up and the speed measurements (items 1, 2, 7) live in `benchmarks/scoring_setup.py`.
Times are CPU seconds of this process (`time.process_time`, one torch thread): on a shared
machine the wall clock measures the neighbours. The local network's data settings are used with
`scoring.sample_rate = 0.25` (3 of 12 batches per loader), to keep the run short.
Run: `.venv/bin/python -m benchmarks.bench_scoring` (about 2.5 CPU minutes).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch
from torch import Tensor

from benchmarks import scoring_gpu
from benchmarks.scoring_setup import SEED, Deltas, Setup, codec_share, efficiency, time_breakdown
from gauntlet.codec import DCTCodec
from gauntlet.config import load_config
from gauntlet.costmodel import (FINEWEB_TOKENS_PER_ROW, H200_BF16_DENSE, PAPER_VOCAB, ScoringCost, exact_peers,
                                gpus_needed, peers_per_window, window_seconds)
from gauntlet.data import random_pages
from gauntlet.miner import mean_gradient
from gauntlet.model import build_model, glibc
from gauntlet.scoring import LossEvaluator, score_peers
from gauntlet.screening import calibrated, choose_exact, first_order_score, random_gradient, spearman, topg_overlap

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "scoring.json"
MFU, TRAIN_STEPS = 0.4, 60


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _trim_heap() -> None:
    """Give glibc's free heap pages back to the kernel (`malloc_trim`), so the resident set is
    what is alive: `build_model` keeps freed memory in the heap for reuse
    (`gauntlet.model.keep_freed_memory`), and a run would otherwise grow into memory that an
    earlier one freed, hiding its growth from the measurement."""
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)


def _peak_during(fn: object) -> int:
    """Bytes the resident set rose to above its level before `fn()` (Linux: resets VmHWM)."""
    _trim_heap()
    Path("/proc/self/clear_refs").write_text("5")  # the peak resident set is now the current one
    base = _rss_kib("VmRSS")
    fn()  # type: ignore[operator]
    return (_rss_kib("VmHWM") - base) * 1024


def peak_memory_growth(size: str = "small", vocab: int = 256, counts: tuple[int, int] = (2, 10),
                       keep: bool = False) -> dict:
    """Peak-memory growth per extra peer, as a fraction of one dense delta; `keep` holds every
    delta alive (what the scorer must not do) to show the measurement sees it."""
    model = build_model(size, vocab, seed=0)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, vocab, (2, 16), generator=g)]
    delta_bytes = sum(p.numel() * 4 for p in model.parameters())
    evaluator = LossEvaluator(model)

    def run(n: int) -> None:
        deltas = Deltas(model, list(range(n)), fresh=True)
        score_peers(evaluator, {u: deltas[u] for u in deltas} if keep else deltas,
                    {u: batches for u in range(n)}, batches, 1e-4)

    run(1)  # the scratch copy and the allocator's first growth
    low, high = (_peak_during(lambda n=n: run(n)) for n in counts)
    per_peer = (high - low) / (counts[1] - counts[0])
    return {"size": size, "delta_bytes": delta_bytes, "peers": list(counts), "peak_bytes": [low, high],
            "growth_per_peer_bytes": per_peer, "growth_per_peer_in_deltas": per_peer / delta_bytes}


HOSTILE = ("sign_flip", "noise", "scaled", "free_rider", "copycat")


def _peer_deltas(setup: Setup, honest: int, per_hostile: int) -> dict[int, dict[str, Tensor]]:
    """Honest deltas: the gradient of a peer's own pages times lr, through the DCT codec; hostile
    ones: its sign flipped, random, scaled by 100, near-zero noise, or another peer's copy."""
    cfg, codec = setup.cfg, DCTCodec.from_config(setup.cfg.codec)
    shapes = {n: tuple(p.shape) for n, p in setup.model.named_parameters()}
    lr, out = cfg.schedule.peak_lr, {}
    for uid in range(1, honest + per_hostile * len(HOSTILE) + 1):
        kind = "honest" if uid <= honest else HOSTILE[(uid - honest - 1) // per_hostile]
        g = torch.Generator().manual_seed(uid)
        if kind == "copycat":
            out[uid] = out[1 + uid % honest]
            continue
        if kind in ("noise", "free_rider"):
            scale = lr * (1e-6 if kind == "free_rider" else 1.0)
            comp = codec.encode_all({n: scale * torch.randn(s, generator=g) for n, s in shapes.items()})
        else:
            grad = mean_gradient(setup.model, setup.own([uid])[uid])
            comp = codec.encode_all({n: lr * t for n, t in grad.items()})
        factor = {"sign_flip": -1.0, "scaled": 100.0}.get(kind, 1.0)
        out[uid] = codec.decode_all({n: (i, factor * v) for n, (i, v) in comp.items()}, shapes)
    return out


def _train(setup: Setup, steps: int) -> None:
    opt = torch.optim.AdamW(setup.model.parameters(), lr=2e-3)
    batches = setup.sampled(random_pages(SEED + 1, 8, setup.corpus.n_pages(setup.cfg.data.rows_per_page)), 0)
    setup.model.train()
    for step in range(steps):
        b = batches[step % len(batches)]
        setup.model(input_ids=b, labels=b).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    setup.model.eval()


def screening_run(setup: Setup, honest: int = 20, per_hostile: int = 3) -> dict:
    cfg, model = setup.cfg, setup.model
    deltas = _peer_deltas(setup, honest, per_hostile)
    uids = sorted(deltas)
    own, rand = setup.own(uids), setup.rand()
    eta, evaluator = cfg.scoring.eval_lr_factor * cfg.schedule.peak_lr, LossEvaluator(model)
    start = time.process_time()
    exact = {u: l.gradient_score for u, l in score_peers(evaluator, deltas, own, rand, eta).items()}
    exact_s = time.process_time() - start
    start = time.process_time()
    grad = random_gradient(model, rand)
    est = {u: first_order_score(grad, deltas[u], eta) for u in uids}
    chosen = choose_exact(est, cfg, SEED)
    scored = score_peers(evaluator, {u: deltas[u] for u in chosen}, own, rand, eta, grad.loss)
    result = calibrated(est, {u: l.gradient_score for u, l in scored.items()})
    screened_s = time.process_time() - start
    g = cfg.aggregation.gather_size
    return {"peers": len(uids), "honest": honest, "hostile": {k: per_hostile for k in HOSTILE},
            "gather_size": g, "exact_scored": len(chosen), "eta": eta,
            "spearman_estimate": spearman(est, exact), "topg_overlap_estimate": topg_overlap(est, exact, g),
            "spearman_screened": spearman(result, exact), "topg_overlap_screened": topg_overlap(result, exact, g),
            "estimate_over_exact_median": statistics.median(est[u] / exact[u] for u in uids if exact[u] != 0),
            "exact_s": exact_s, "screened_s": screened_s, "speedup": exact_s / screened_s}


def projection() -> dict:
    """The cost model at 1.2B on one H200 at 40% MFU, 96 s windows, FineWeb-edu's row length."""
    out = {"device_flops": H200_BF16_DENSE, "mfu": MFU, "tokens_per_row": FINEWEB_TOKENS_PER_ROW}
    for preset in ("paper", "default"):
        cfg = load_config(preset=preset, overrides={"model": {"size": "paper-1.2b"}})
        cost = ScoringCost.of(cfg, PAPER_VOCAB)
        exact = {"per_peer_s": cost.peer_flops() / (H200_BF16_DENSE * MFU),
                 "peers_per_window": peers_per_window(cfg, None, H200_BF16_DENSE, MFU),
                 "gpus_for_250_peers": gpus_needed(cfg, 250, H200_BF16_DENSE, MFU)}
        out[preset] = {"window_s": cfg.chain.blocks_per_window * cfg.chain.block_time_s,
                       "flops_per_token": cost.flops_per_token, "own_tokens": cost.own_tokens,
                       "rand_tokens": cost.rand_tokens, "exact": exact}
        if cfg.scoring.shared_random_batches:
            out[preset]["screening"] = {
                "exact_peers_of_250": exact_peers(cfg, 250),
                "window_250_s": window_seconds(cfg, 250, H200_BF16_DENSE, mfu=MFU, screening=True),
                "gpus_for_250_peers": gpus_needed(cfg, 250, H200_BF16_DENSE, MFU, screening=True),
                "speedup_250": window_seconds(cfg, 250, H200_BF16_DENSE, mfu=MFU)
                / window_seconds(cfg, 250, H200_BF16_DENSE, mfu=MFU, screening=True)}
            out[preset]["peers_per_window_by_tokens_per_row"] = {
                t: peers_per_window(cfg, None, H200_BF16_DENSE, MFU, tokens_per_row=t) for t in (500, 2000)}
    return out


def main() -> dict:
    torch.set_num_threads(1)
    started = time.process_time()
    tiny, small = efficiency("tiny", (4, 16, 64), rounds=2), efficiency("small", (4,))
    tiny["time_breakdown"], small["time_breakdown"] = time_breakdown("tiny"), time_breakdown("small", 2)
    small["codec"] = codec_share("small")
    per_peer = list(tiny["per_peer_s"].values())
    memory = peak_memory_growth()
    setup = Setup("tiny")
    _train(setup, TRAIN_STEPS)
    screen = screening_run(setup) | {"trained_steps": TRAIN_STEPS}
    proj, gpu = projection(), scoring_gpu.measure()
    result = {
        "scoring_efficiency_tiny": tiny["efficiency"], "scoring_efficiency_small": small["efficiency"],
        "per_peer_time_spread": max(per_peer) / min(per_peer) - 1,
        "peak_memory_growth_per_peer": memory["growth_per_peer_in_deltas"],
        "codec_share_small": small["codec"]["codec_share"],
        "screening_spearman": screen["spearman_estimate"],
        "screening_topg_overlap": screen["topg_overlap_estimate"],
        "screening_speedup": screen["speedup"],
        "projected_peers_per_window_1p2b_h200": proj["default"]["exact"]["peers_per_window"],
        "gpus_for_250_peers": {"exact": proj["default"]["exact"]["gpus_for_250_peers"],
                               "screening": proj["default"]["screening"]["gpus_for_250_peers"]},
        "gpu_peers_per_window": gpu["gpu_peers_per_window"], "gpu_mfu": gpu["gpu_mfu"], "gpu": gpu,
        "tiny": tiny, "small": small, "memory": memory, "screening": screen, "projection": proj,
        "seconds": time.process_time() - started,
    }
    kept = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}  # bench_screening's figures stay
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(kept | result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
