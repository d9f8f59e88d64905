"""Stage 2 of the 1.2B model on a GPU in bf16: measured time per peer, MFU, peers per window.

The same scorer as the validator's (`score_peers`: one scratch copy, bf16 autocast on CUDA) on
the `default` preset's sampled budget: loaders of `ScoringCost.own_tokens` / `rand_tokens`
tokens in batches of (batch_size, seq_len), synthetic token ids (the cost does not depend on
them), and dense deltas cycled from two (decoding is not what is timed). MFU is the cost
model's forward FLOPs over the measured time and the device's peak.

`bench_scoring` calls `measure()`; without a CUDA device it returns None figures and the reason.
Run alone on a GPU machine: `python -m benchmarks.scoring_gpu`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping

import torch

from gauntlet.config import load_config
from gauntlet.costmodel import H200_BF16_DENSE, PAPER_VOCAB, ScoringCost
from gauntlet.model import build_model
from gauntlet.scoring import LossEvaluator, score_peers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(size: str = "paper-1.2b", vocab: int = PAPER_VOCAB, device: str = "cuda", peers: int = 8,
            peak_flops: float = H200_BF16_DENSE, overrides: Mapping | None = None) -> dict:
    """Seconds per peer, MFU and peers per window of exact scoring on `device`."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        return {"gpu_peers_per_window": None, "gpu_mfu": None, "reason": "no CUDA device on this machine"}
    cfg = load_config(preset="default", overrides={"model": {"size": size}, **(overrides or {})})
    cost, d = ScoringCost.of(cfg, vocab), cfg.data
    per_batch = d.batch_size * d.seq_len
    g = torch.Generator().manual_seed(0)
    loader = lambda tokens: [torch.randint(0, vocab, (d.batch_size, d.seq_len), generator=g).to(dev)  # noqa: E731
                             for _ in range(max(1, tokens // per_batch))]
    own, rand = {u: loader(cost.own_tokens) for u in range(peers)}, loader(cost.rand_tokens)
    model = build_model(size, vocab, cfg.model.init_seed, dev)
    deltas = [{n: torch.randn(p.shape, generator=g).to(dev) for n, p in model.named_parameters()} for _ in range(2)]
    evaluator = LossEvaluator(model, dev)
    score_peers(evaluator, {0: deltas[0]}, {0: own[0]}, rand, 1e-4)  # warm-up: kernels, allocator
    _sync(dev)
    start = time.perf_counter()
    score_peers(evaluator, {u: deltas[u % 2] for u in range(peers)}, own, rand, 1e-4)
    _sync(dev)
    seconds = time.perf_counter() - start
    tokens = sum(b.numel() for b in rand) * (1 + peers) + 2 * sum(b.numel() for u in own for b in own[u])
    window_s = cfg.chain.blocks_per_window * cfg.chain.block_time_s
    return {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "size": size,
            "peers": peers, "seconds": seconds, "per_peer_s": seconds / peers,
            "gpu_mfu": cost.flops_per_token * tokens / seconds / peak_flops,
            "gpu_peers_per_window": math.floor(window_s * peers / seconds)}


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
