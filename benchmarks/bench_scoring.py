"""Stage 2 against its floor, its memory, screening, and the cost model's projection to 1.2B.

1. The CPU's matmul rate: a (batch * seq_len, hidden) @ (hidden, 4 * hidden) float32 product at
   the model's hidden size, one thread. It is the `device_flops` of the floor.
2. `scoring_efficiency_<size>`: `score_peers` (the validator's scorer) on the local network's
   data settings, measured time over the forward-pass floor of the tokens it forwarded
   (`gauntlet.costmodel`), the matmul rate measured just before and after each run; where the
   time goes (`time_breakdown`: matmuls, log-softmax, attention, other); `per_peer_time_spread`:
   the time per peer at 4, 16 and 64 peers on `tiny`, as the spread max / min - 1 (issue 14's
   "flat within 15%" is a spread <= 0.15; the shared random-before is amortised, nothing else
   should change).
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

Times are CPU seconds of this process (`time.process_time`, one torch thread): on a shared
machine the wall clock measures the neighbours. The local network's data settings are used with
`scoring.sample_rate = 0.25` (3 of 12 batches per loader), to keep the run short.
Run: `.venv/bin/python -m benchmarks.bench_scoring` (about 2.5 CPU minutes).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import Tensor

from benchmarks import scoring_gpu
from gauntlet.codec import DCTCodec
from gauntlet.config import GauntletConfig, load_config
from gauntlet.costmodel import (FINEWEB_TOKENS_PER_ROW, H200_BF16_DENSE, PAPER_VOCAB, ScoringCost, exact_peers,
                                forward_flops_per_token, gpus_needed, peers_per_window, window_seconds)
from gauntlet.data import Corpus, load_tokenizer, page_batches, random_pages, sample_batches
from gauntlet.miner import mean_gradient, own_pages
from gauntlet.model import build_model
from gauntlet.prepare import prepare
from gauntlet.scoring import LossEvaluator, score_peers
from gauntlet.screening import calibrated, choose_exact, first_order_score, random_gradient, spearman, topg_overlap

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
RESULTS = HERE / "results" / "scoring.json"
SEED, WINDOW, MFU, TRAIN_STEPS = 1234, 1, 0.4, 60


def _config(size: str) -> GauntletConfig:
    data = prepare(None, WORK / "data" / "corpus", WORK / "data" / "tokenizer")
    return load_config(ROOT / "deployments" / "local.toml", overrides={
        "model": {"size": size}, "data": {"corpus": str(data.corpus), "tokenizer": str(data.tokenizer)},
        "scoring": {"sample_rate": 0.25}})


def matmul_rate(hidden: int, tokens: int, seconds: float = 0.5) -> float:
    """FLOP/s of a float32 (tokens, hidden) @ (hidden, 4 * hidden) product, median of runs."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(tokens, hidden, generator=g), torch.randn(hidden, 4 * hidden, generator=g)
    runs, end = [], time.process_time() + seconds
    while time.process_time() < end or len(runs) < 5:  # CPU time: the neighbours' load does not count
        start = time.process_time()
        torch.mm(a, b)
        runs.append(time.process_time() - start)
    return 2.0 * tokens * hidden * 4 * hidden / statistics.median(runs)


class Deltas(Mapping[int, Mapping[str, Tensor]]):
    """Dense deltas made on access, like decoding: `fresh` draws a new one for every access (a new
    allocation, for the memory test), otherwise a few are cycled (so the timing is scoring's)."""

    def __init__(self, model: torch.nn.Module, uids: list[int], fresh: bool = False) -> None:
        self.shapes = {n: p.shape for n, p in model.named_parameters()}
        self.uids, self.fresh = uids, fresh
        self.cycled = [] if fresh else [self._draw(i) for i in range(4)]

    def _draw(self, uid: int) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(uid)
        return {n: torch.randn(s, generator=g) for n, s in self.shapes.items()}

    def __getitem__(self, uid: int) -> Mapping[str, Tensor]:
        return self._draw(uid) if self.fresh else self.cycled[uid % len(self.cycled)]

    def __iter__(self) -> Iterator[int]:
        return iter(self.uids)

    def __len__(self) -> int:
        return len(self.uids)


class Setup:
    def __init__(self, size: str) -> None:
        self.cfg = _config(size)
        self.corpus, self.tokenizer = Corpus(self.cfg.data.corpus), load_tokenizer(self.cfg.data.tokenizer)
        self.vocab = len(self.tokenizer)
        self.model = build_model(size, self.vocab, self.cfg.model.init_seed)

    def sampled(self, pages: list[int], seed: int) -> list[Tensor]:
        batches = page_batches(self.corpus, self.tokenizer, pages, self.cfg.data)
        return sample_batches(batches, self.cfg.scoring.sample_rate, seed)

    def own(self, uids: list[int]) -> dict[int, list[Tensor]]:
        return {u: self.sampled(own_pages(u, WINDOW, self.corpus, self.cfg), SEED + u) for u in uids}

    def rand(self) -> list[Tensor]:
        n_pages = self.corpus.n_pages(self.cfg.data.rows_per_page)
        return self.sampled(random_pages(SEED, self.cfg.scoring.random_pages, n_pages), SEED)


def _tokens(batches: list[Tensor]) -> int:
    return sum(b.numel() for b in batches)


def scoring_run(setup: Setup, n_peers: int) -> dict:
    """One exact scoring of `n_peers`: CPU seconds and the forward FLOPs of the tokens it forwarded."""
    uids = list(range(1, n_peers + 1))
    own, rand = setup.own(uids), setup.rand()
    evaluator, deltas = LossEvaluator(setup.model), Deltas(setup.model, uids)
    start = time.process_time()
    score_peers(evaluator, deltas, own, rand, 1e-4)
    seconds = time.process_time() - start
    tokens = _tokens(rand) + sum(2 * _tokens(own[u]) + _tokens(rand) for u in uids)
    fpt = forward_flops_per_token(setup.cfg.model.size, setup.vocab, setup.cfg.data.seq_len)
    return {"peers": n_peers, "seconds": seconds, "per_peer_s": seconds / n_peers, "flops": fpt * tokens}


def efficiency(size: str, peer_counts: tuple[int, ...]) -> dict:
    """Each run's CPU time over its floor, the matmul rate measured just before and just after it
    (the floor is the mean of the two): on a shared machine the neighbours' load on the shared
    core and caches drifts, and bracketing makes the ratio see the same machine on both sides."""
    setup = Setup(size)
    d = setup.cfg.data

    def rate() -> float:
        return matmul_rate(setup.model.config.hidden_size, d.batch_size * d.seq_len)

    scoring_run(setup, 1)  # untimed: the scratch copy, the allocator's first growth, lazy imports
    rates, runs = [rate()], []
    for n in peer_counts:
        runs.append(scoring_run(setup, n))
        rates.append(rate())
    for run, before, after in zip(runs, rates, rates[1:]):
        run["floor_s"] = run["flops"] * (1 / before + 1 / after) / 2
        run["efficiency"] = run["seconds"] / run["floor_s"]
    total = sum(r["seconds"] for r in runs) / sum(r["floor_s"] for r in runs)
    return {"matmul_flops_per_s": statistics.median(rates), "matmul_flops_per_s_runs": rates, "runs": runs,
            "efficiency": total}


OP_GROUPS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm"),
    "log_softmax_nll": ("aten::_log_softmax", "aten::nll_loss_forward", "aten::nll_loss2d_forward"),
    "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_attention_math",
                  "aten::_scaled_dot_product_flash_attention", "aten::_scaled_dot_product_efficient_attention"),
}
"""torch.profiler op names (self time) per group of `time_breakdown`."""


def time_breakdown(size: str, n_peers: int = 4) -> dict[str, float]:
    """Where scoring's CPU time goes (torch.profiler's self time by op, grouped): the matrix
    products the floor counts, the loss's log-softmax (not in the floor), attention (in the floor
    at full length; the causal kernel is slower than a matmul), and everything else
    (elementwise ops, RMSNorm, RoPE, Python). Shares of the profiled total."""
    from torch.profiler import ProfilerActivity, profile
    setup = Setup(size)
    scoring_run(setup, 1)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        scoring_run(setup, n_peers)
    self_us = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(self_us.values())
    shares = {g: sum(self_us.get(op, 0.0) for op in ops) / total for g, ops in OP_GROUPS.items()}
    return shares | {"other": 1.0 - sum(shares.values())}


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _peak_during(fn: object) -> int:
    """Bytes the resident set rose to above its level before `fn()` (Linux: resets VmHWM)."""
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
    tiny, small = efficiency("tiny", (4, 16, 64)), efficiency("small", (4,))
    tiny["time_breakdown"], small["time_breakdown"] = time_breakdown("tiny"), time_breakdown("small", 2)
    per_peer = [r["per_peer_s"] for r in tiny["runs"]]
    memory = peak_memory_growth()
    setup = Setup("tiny")
    _train(setup, TRAIN_STEPS)
    screen = screening_run(setup) | {"trained_steps": TRAIN_STEPS}
    proj, gpu = projection(), scoring_gpu.measure()
    result = {
        "scoring_efficiency_tiny": tiny["efficiency"], "scoring_efficiency_small": small["efficiency"],
        "per_peer_time_spread": max(per_peer) / min(per_peer) - 1,
        "peak_memory_growth_per_peer": memory["growth_per_peer_in_deltas"],
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
