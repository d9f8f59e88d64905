"""Codec speed: encode, one-scatter batch decode vs a loop, scatter-mean vs a per-peer loop.

Two tensor sets: `tiny`-like shapes (an embedding, attention and MLP matrices, norms) and one
2048x2048 matrix (a layer of the paper's model). P = 16 peers, the paper's gather set plus one.
Figures are medians of repeated runs on one torch thread; ratios (loop / batched) are what to
compare across machines. Run: `.venv/bin/python -m benchmarks.bench_codec [cpu|cuda]`.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from gauntlet.codec import DCTCodec

PEERS = 16
RESULTS = Path(__file__).resolve().parent / "results" / "codec.json"


def _tiny_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {"embed": (4096, 128)}
    shapes |= {f"attn.{i}": (128, 128) for i in range(16)}
    shapes |= {f"mlp.{i}": (512, 128) for i in range(8)}
    shapes |= {f"norm.{i}": (128,) for i in range(9)}
    return shapes


def _timed_ms(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1e3


def _paired_ms(
    batched: Callable[[], object], looped: Callable[[], object], device: torch.device, repeats: int
) -> tuple[float, float]:
    """Medians of two alternated measurements, so a shared machine's load drift hits both alike."""
    batched(), looped()  # warm-up: bases cached, allocator primed
    pairs = [(_timed_ms(batched, device), _timed_ms(looped, device)) for _ in range(repeats)]
    return statistics.median(a for a, _ in pairs), statistics.median(b for _, b in pairs)


def _loop_mean(codec: DCTCodec, idx: torch.Tensor, vals: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The same scatter-mean with one scatter per peer: the baseline decode_mean replaces."""
    lay = codec.layout(shape)
    sums = torch.zeros(lay.n_chunks, lay.chunk_elems, device=idx.device)
    counts = torch.zeros_like(sums)
    for p in range(idx.shape[0]):
        sums.scatter_add_(1, idx[p], vals[p])
        counts.scatter_add_(1, idx[p], torch.ones_like(vals[p]))
    every = torch.arange(lay.chunk_elems, device=idx.device).expand(lay.n_chunks, -1)
    return DCTCodec(codec.chunk, codec.chunk**2).decode(every, sums / counts.clamp_min(1), shape)


def _measure(codec: DCTCodec, shapes: dict[str, tuple[int, ...]], device: torch.device, repeats: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    tensors = {n: torch.randn(s, generator=gen).to(device) for n, s in shapes.items()}
    peers = [codec.encode_all({n: t + 0.5 * torch.randn_like(t) for n, t in tensors.items()}) for _ in range(PEERS)]
    stacked = {n: (torch.stack([p[n][0] for p in peers]), torch.stack([p[n][1] for p in peers])) for n in shapes}

    def batch() -> None:
        for n, (idx, vals) in stacked.items():
            codec.decode_batch(idx, vals, shapes[n])

    def loop() -> list[torch.Tensor]:  # keeps the P outputs alive, as decode_batch's result does
        return [codec.decode(idx[p], vals[p], shapes[n]) for n, (idx, vals) in stacked.items() for p in range(PEERS)]

    def mean() -> None:
        for n, (idx, vals) in stacked.items():
            codec.decode_mean(idx, vals, shapes[n])

    def mean_loop() -> None:
        for n, (idx, vals) in stacked.items():
            _loop_mean(codec, idx, vals, shapes[n])

    for n, (idx, vals) in stacked.items():  # the two paths must agree before they are timed
        torch.testing.assert_close(codec.decode_mean(idx, vals, shapes[n]), _loop_mean(codec, idx, vals, shapes[n]))
    encode_ms = statistics.median(
        _timed_ms(lambda: codec.encode_all(tensors), device) for _ in range(repeats)
    )
    batch_ms, loop_ms = _paired_ms(batch, loop, device, repeats)
    mean_ms, mean_loop_ms = _paired_ms(mean, mean_loop, device, repeats)
    figures = {
        "elements": sum(t.numel() for t in tensors.values()),
        "encode_ms": encode_ms,
        "decode_batch_ms": batch_ms,
        "decode_loop_ms": loop_ms,
        "decode_mean_ms": mean_ms,
        "mean_loop_ms": mean_loop_ms,
    }
    figures["encode_ms_per_melem"] = encode_ms / (figures["elements"] / 1e6)
    figures["decode_loop_over_batch"] = figures["decode_loop_ms"] / figures["decode_batch_ms"]
    figures["mean_loop_over_decode_mean"] = figures["mean_loop_ms"] / figures["decode_mean_ms"]
    return figures


def main(device: str = "cpu", repeats: int = 7) -> dict:
    torch.set_num_threads(1)
    dev = torch.device(device)
    codec = DCTCodec(chunk=64, topk=32)
    result = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "peers": PEERS,
        "codec": {"chunk": codec.chunk, "topk": codec.topk},
        "tiny": _measure(codec, _tiny_shapes(), dev, repeats),
        "2048x2048": _measure(codec, {"w": (2048, 2048)}, dev, repeats),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:2]), indent=2))
