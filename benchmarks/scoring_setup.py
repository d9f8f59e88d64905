"""The scorer's set-up and its speed measurements, shared by `bench_scoring`'s figures.

`Setup` is a size's model, corpus and sampled batches on the local network's data settings
(`scoring.sample_rate = 0.25`); `scoring_run` times one exact scoring (CPU seconds of this
process, one torch thread) and counts the forward FLOPs of the tokens it forwarded;
`efficiency` puts that over the floor at the CPU's matmul rate, measured around each run;
`time_breakdown` says where the time goes by op; `codec_share` what decoding a file adds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import Tensor

from gauntlet.codec import make_codec
from gauntlet.config import GauntletConfig, load_config
from gauntlet.costmodel import forward_flops_per_token
from gauntlet.data import Corpus, load_tokenizer, page_batches, random_pages, sample_batches
from gauntlet.filter import probe_values
from gauntlet.miner import own_pages
from gauntlet.model import build_model
from gauntlet.prepare import prepare
from gauntlet.scoring import LossEvaluator, score_peers
from gauntlet.submission import parse_submission, write_submission
from gauntlet.window.context import model_spec

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
SEED, WINDOW = 1234, 1


def config(size: str) -> GauntletConfig:
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
        self.cfg = config(size)
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


def efficiency(size: str, peer_counts: tuple[int, ...], rounds: int = 1) -> dict:
    """Each run's CPU time over its floor, the matmul rate measured just before and just after it
    (the floor is the mean of the two): on a shared machine the neighbours' load on the shared
    core and caches drifts, and bracketing makes the ratio see the same machine on both sides.

    `rounds` > 1 runs every peer count once a round, in alternating order (forward, then
    backward), so that a drift in the neighbours' load falls on every count alike;
    `per_peer_s` then sums each count's rounds (`per_peer_time_spread` reads it)."""
    setup = Setup(size)
    d = setup.cfg.data

    def rate() -> float:
        return matmul_rate(setup.model.config.hidden_size, d.batch_size * d.seq_len)

    scoring_run(setup, 1)  # untimed: the scratch copy, the allocator's first growth, lazy imports
    rates, runs = [rate()], []
    for r in range(rounds):
        for n in (peer_counts if r % 2 == 0 else peer_counts[::-1]):
            runs.append(scoring_run(setup, n))
            rates.append(rate())
    for run, before, after in zip(runs, rates, rates[1:]):
        run["floor_s"] = run["flops"] * (1 / before + 1 / after) / 2
        run["efficiency"] = run["seconds"] / run["floor_s"]
    total = sum(r["seconds"] for r in runs) / sum(r["floor_s"] for r in runs)
    per_peer = {n: sum(r["seconds"] for r in runs if r["peers"] == n) / (n * rounds) for n in peer_counts}
    return {"matmul_flops_per_s": statistics.median(rates), "matmul_flops_per_s_runs": rates, "runs": runs,
            "rounds": rounds, "per_peer_s": per_peer, "efficiency": total}


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


def codec_share(size: str, n_peers: int = 2) -> dict:
    """Decoding's share of scoring a peer, on files the configured codec wrote from random deltas:
    parsing a file and `decode_all` over parsing, decoding and `score_peers` (for a size without a
    local network; `bench_window` measures the real evaluate stage on `tiny`)."""
    setup = Setup(size)
    cfg, uids = setup.cfg, list(range(1, n_peers + 1))
    codec, spec = make_codec(cfg.codec), model_spec(cfg, setup.model, setup.vocab)
    params = {n: p.detach() for n, p in setup.model.named_parameters()}
    probe, max_bytes = probe_values(params, cfg.filter.probe_elements), int(cfg.filter.max_file_mb * 2**20)
    files = {u: write_submission(WINDOW, u, spec.fingerprint, codec, codec.encode_all(delta), probe)
             for u, delta in Deltas(setup.model, uids, fresh=True).items()}
    own, rand, evaluator = setup.own(uids), setup.rand(), LossEvaluator(setup.model)
    score_peers(evaluator, {1: Deltas(setup.model, [1])[1]}, own, rand, 1e-4)  # untimed warm-up
    start = time.process_time()
    subs = {u: parse_submission(files[u], window=WINDOW, uid=u, spec=spec, max_bytes=max_bytes) for u in uids}
    deltas = {u: codec.decode_all(sub.grads, spec.shapes) for u, sub in subs.items()}
    decode_s = time.process_time() - start
    start = time.process_time()
    score_peers(evaluator, deltas, own, rand, 1e-4)
    score_s = time.process_time() - start
    return {"size": size, "codec": cfg.codec.kind, "peers": n_peers, "file_bytes": len(files[1]),
            "decode_s": decode_s, "score_s": score_s, "codec_share": decode_s / (decode_s + score_s)}
