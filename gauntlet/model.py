"""The LLaMA every node trains and scores: sizes, deterministic construction, token-weighted loss.

Miners and validators must start from bit-identical weights, or every sync probe reads as a
desync. So the initial weights never come from the global RNG nor from device kernels: each
parameter is drawn on the CPU from its own generator, seeded by a hash of (seed, parameter name),
and only then moved to the device. Matrices get a uniform distribution with the standard deviation
of LLaMA's usual normal init (0.02): `torch.rand` on the CPU is exact integer arithmetic on the
Mersenne Twister's bits, whereas normal sampling goes through vectorised log/cos kernels whose
last bit may depend on the CPU's instruction set. Norm weights start at one, as in LLaMA.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import math
import platform
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

LOSS_CHUNK = {"cpu": 128, "cuda": 4096}
"""Positions whose logits `causal_lm_loss_sum` makes at a time, per device type. On the CPU a
(128, 4096) float32 block (the `tiny`/`small` vocabulary) is 2 MiB, one core's L2 cache here,
where a whole (8, 128) batch's logits are 16 MiB that the LM head writes and the log-softmax
reads back from memory; measured on one thread, scoring `tiny` took 0.94-0.97 of the time
(`small`: 0.99). On a GPU the chunk bounds the logits' memory (4096 x 32000 float32 is 0.5 GB,
where a (6, 2048) batch's are 1.5 GB) at a few kernel launches per batch."""

INIT_STD = 0.02
"""Standard deviation of every initial weight matrix (LLaMA's `initializer_range`)."""

_ROPE = {"rope_type": "default", "rope_theta": 10000.0}

SIZES: dict[str, dict] = {
    "tiny": dict(
        hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
        intermediate_size=512, max_position_embeddings=256,
    ),
    "small": dict(
        hidden_size=256, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8,
        intermediate_size=1024, max_position_embeddings=1024,
    ),
    # GAUNTLET.md "The 1.2B model of the paper" (templar v0.2.85's hparams).
    "paper-1.2b": dict(
        hidden_size=2048, num_hidden_layers=16, num_attention_heads=8, num_key_value_heads=8,
        intermediate_size=8192, max_position_embeddings=2048,
    ),
}
"""LlamaConfig keywords per size; every dimension is a multiple of 64, so the DCT codec's chunk
rule (largest divisor <= 64) gives full 64-wide chunks (the vocabulary should be one too)."""


def _check_size(size: str) -> dict:
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)}")
    return SIZES[size]


def llama_config(size: str, vocab_size: int) -> LlamaConfig:
    """The full LlamaConfig of a size: untied embeddings, no biases, RoPE theta 1e4, SDPA."""
    dims = _check_size(size)
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be at least 2, got {vocab_size}")
    return LlamaConfig(
        vocab_size=vocab_size, rope_parameters=dict(_ROPE), tie_word_embeddings=False,
        initializer_range=INIT_STD, rms_norm_eps=1e-6, attention_dropout=0.0,
        use_cache=False, attn_implementation="sdpa", **dims,
    )


def _param_seed(seed: int, name: str) -> int:
    digest = hashlib.blake2b(f"gauntlet-init/v1|{seed}|{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@torch.no_grad()
def _init_parameters(model: torch.nn.Module, seed: int) -> None:
    half_width = INIT_STD * math.sqrt(3.0)  # U(-a, a) has std a / sqrt(3)
    for name, param in model.named_parameters():
        if param.dim() == 1:
            param.fill_(1.0)  # RMSNorm gains; LLaMA has no biases
            continue
        gen = torch.Generator(device="cpu").manual_seed(_param_seed(seed, name))
        values = torch.rand(param.shape, generator=gen, dtype=torch.float32)
        param.copy_(values.mul_(2.0 * half_width).sub_(half_width))


HEAP_KEEP_BYTES = 1 << 28
"""Allocations below this come from the heap and freed memory up to twice it stays there."""
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_HEAP_KEPT: list[bool] = []


def keep_freed_memory(limit: int = HEAP_KEEP_BYTES) -> bool:
    """Let glibc keep freed tensor memory for reuse instead of returning it to the kernel.

    Why: a forward pass on the CPU allocates and frees the same large activations (the logits,
    B * T * vocab floats, and their log-softmax) batch after batch. By default glibc serves such
    blocks with mmap and unmaps them on free, or trims the heap top once 2x the dynamic threshold
    is free, so every batch page-faults its activations in again: measured on the `tiny` model,
    about a million minor faults and 20% of scoring's CPU time in the kernel (issue 14). Raising
    the mmap and trim thresholds keeps the process's working set allocated; its peak is unchanged.
    It holds in worker threads too (a flow's tasks), except for blocks too big for glibc's 64 MiB
    per-thread heaps, which stay mapped per use. Values are untouched (torch aligns every tensor
    to 64 bytes either way). Once per process; False where the C library is not glibc (nothing
    to do) or refuses the setting.
    """
    if _HEAP_KEPT:
        return _HEAP_KEPT[0]
    libc = glibc()
    ok = libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, limit)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * limit))
    _HEAP_KEPT.append(ok)
    return ok


def glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc on Linux (its malloc settings apply), else None."""
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return None


def build_model(size: str, vocab_size: int, seed: int, device: str | torch.device = "cpu") -> LlamaForCausalLM:
    """A float32 LlamaForCausalLM whose weights depend only on (size, vocab_size, seed).

    Laid out on the meta device (transformers' own init is skipped: every parameter is drawn
    here), filled on the CPU and moved to `device` afterwards, so the same seed gives the same
    bits on any machine. The global RNG and torch's init functions are left untouched, so
    building a model in one thread cannot disturb another. A process that builds a model runs
    it, so its freed activations are kept for reuse (`keep_freed_memory`).
    """
    config = llama_config(size, vocab_size)
    keep_freed_memory()
    with torch.device("meta"):  # shapes only: no memory, no RNG, no global patching
        model = LlamaForCausalLM(config)
    model = model.to_empty(device="cpu").float()
    model.model.rotary_emb = LlamaRotaryEmbedding(config)  # its buffers were left empty
    _init_parameters(model, seed)
    return model.to(device)


def param_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Named trainable parameters and their shapes: the tensors a submission may name."""
    return {name: tuple(p.shape) for name, p in model.named_parameters() if p.requires_grad}


def model_fingerprint(size: str, vocab_size: int, seed: int, chunk: int, topk: int) -> str:
    """Short stable hash of what a submission must agree on with the validator.

    The size's full dimensions are part of it, so redefining a size changes the fingerprint.
    """
    dims = _check_size(size)
    canonical = {
        "v": 1,
        "model": {"size": size, "dims": dims, "rope": _ROPE, "vocab_size": vocab_size, "init_seed": seed},
        "codec": {"chunk": chunk, "topk": topk},
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resolve_device(spec: str = "auto") -> torch.device:
    """`auto` -> CUDA when present, else CPU; an explicit CUDA device must exist."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {spec!r} asked for, but torch sees no CUDA GPU; use auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {spec!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist")
    return device


def autocast(device: str | torch.device) -> AbstractContextManager:
    """bf16 autocast on CUDA (the matmuls), plain float32 on the CPU (bf16 there is slow)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def causal_lm_loss_sum(model: LlamaForCausalLM, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor],
                       batch: Tensor, chunk: int | None = None) -> tuple[Tensor, int]:
    """Summed next-token cross-entropy over a batch and the number of predicted tokens, for a HF
    causal LM run functionally at `params` (and `buffers`).

    Batches are packed sequences with no padding, so every position but the first of each row
    is a target and the count is B * (T - 1). The sum stays a device tensor (no host sync):
    callers add sums and counts over batches and divide once, which gives the token-weighted
    mean the scores are defined with. The body (`model.model`) runs once on the whole batch; its
    last hidden states, less each row's last position, go through the LM head and the
    cross-entropy `chunk` positions at a time (`LOSS_CHUNK` by device), so the full (B, T, vocab)
    logits never exist; the chunks' float32 sums are added in float64, in position order.
    Differentiable (screening's gradient goes through it). The tests bound it against the loss
    of the whole logits and against HF's own mean loss.
    """
    if batch.dim() != 2 or batch.shape[1] < 2:
        raise ValueError(f"batch must be (B, T) with T >= 2, got shape {tuple(batch.shape)}")
    chunk = LOSS_CHUNK.get(batch.device.type, LOSS_CHUNK["cpu"]) if chunk is None else chunk
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    body = {name[len("model."):]: t for name, t in (*params.items(), *buffers.items()) if name.startswith("model.")}
    hidden = functional_call(model.model, body, (batch,)).last_hidden_state  # (B, T, H), after the final norm
    hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1])  # the positions that predict a token
    targets = batch[:, 1:].reshape(-1)
    head = params["lm_head.weight"]
    total = torch.zeros((), dtype=torch.float64, device=batch.device)
    for start in range(0, targets.numel(), chunk):
        logits = F.linear(hidden[start:start + chunk], head)
        total = total + F.cross_entropy(logits.float(), targets[start:start + chunk], reduction="sum").double()
    return total, targets.numel()
