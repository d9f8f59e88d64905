"""The reference miner: what an honest peer runs each window (GAUNTLET.md "What a peer does").

1. train on its own pages for W (``assign_pages(seed=uid, offset=W * pages_per_window)``),
   g = mean gradient over its batches;
2. ``codec.kind = "dct"`` (the paper): momentum ``m = momentum * m + lr_W * g`` (first window:
   ``m = lr_W * g``), DCT-II top-k per chunk, error feedback ``m -= decode(kept)`` once past the
   first windows;
   ``codec.kind = "sparseloco"`` (the reference's last miners): error feedback from the first
   window, ``e = ef_decay * e + lr_W * g``, top-k of e per chunk quantised, ``e -= what was sent``;
3. a safetensors file with the sync probe (its parameters at the start of W).

Both keep their buffer in `MinerState.momentum`, so a behaviour never asks which codec it runs.

The local network's hostile behaviours are small strategies over these functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from gauntlet.codec import Codec, Compressed
from gauntlet.config import GauntletConfig
from gauntlet.data import Corpus, assign_pages, page_batches
from gauntlet.filter import probe_values
from gauntlet.submission import write_submission


@dataclass
class MinerState:
    """A peer's private state across windows (its momentum, or SparseLoCo's error-feedback buffer)."""

    uid: int
    momentum: dict[str, Tensor] | None = None
    windows_trained: int = 0
    history: list[Compressed] = field(default_factory=list)
    """Recent pseudo-gradients (kept for stale/replay behaviours of the local network)."""


def own_pages(uid: int, window: int, corpus: Corpus, cfg: GauntletConfig) -> list[int]:
    d = cfg.data
    return assign_pages(seed=uid, offset=window * d.pages_per_window, n=d.pages_per_window,
                        n_pages=corpus.n_pages(d.rows_per_page))


def mean_gradient(model: torch.nn.Module, batches: Sequence[Tensor]) -> dict[str, Tensor]:
    """Mean over batches of the gradient of each batch's mean token loss."""
    if not batches:
        raise ValueError("mean_gradient needs at least one batch")
    model.train()
    model.zero_grad(set_to_none=True)
    for batch in batches:
        out = model(input_ids=batch, labels=batch)
        (out.loss / len(batches)).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    model.eval()
    return grads


def pseudo_gradient(state: MinerState, grad: Mapping[str, Tensor], lr: float, codec: Codec,
                    momentum: float, error_feedback_after: int) -> Compressed:
    """Update the momentum with this window's gradient and compress it (with error feedback).

    A SparseLoCo codec takes its own feedback step (`momentum` and `error_feedback_after` are
    DCT settings); its values are `Quantized` pairs, which the writer packs exactly as sent.
    """
    if codec.kind == "sparseloco":
        if state.momentum is None:
            state.momentum = {}
        with torch.no_grad():
            delta = {n: lr * g for n, g in grad.items()}
        compressed: Compressed = codec.feedback_step(state.momentum, delta)  # type: ignore[attr-defined]
        state.windows_trained += 1
        state.history = [*state.history[-4:], compressed]
        return compressed
    with torch.no_grad():
        if state.momentum is None:
            state.momentum = {n: lr * g for n, g in grad.items()}
        else:
            for n, g in grad.items():
                state.momentum[n].mul_(momentum).add_(g, alpha=lr)
        compressed = codec.encode_all(state.momentum)
        if state.windows_trained >= error_feedback_after:
            shapes = {n: tuple(m.shape) for n, m in state.momentum.items()}
            for n, kept in codec.decode_all(compressed, shapes).items():
                state.momentum[n].sub_(kept)
    state.windows_trained += 1
    state.history = [*state.history[-4:], compressed]
    return compressed


@dataclass(frozen=True)
class MinedWindow:
    window: int
    uid: int
    compressed: Compressed
    probe: dict[str, list[float]]
    pages: list[int]


def mine_window(model: torch.nn.Module, state: MinerState, window: int, lr: float, corpus: Corpus,
                tokenizer: object, codec: Codec, cfg: GauntletConfig,
                pages: list[int] | None = None) -> MinedWindow:
    """Train one window on the peer's own pages (or `pages`, for hostile variants)."""
    pages = own_pages(state.uid, window, corpus, cfg) if pages is None else pages
    batches = page_batches(corpus, tokenizer, pages, cfg.data)
    params = {n: p.detach() for n, p in model.named_parameters()}
    probe = probe_values(params, cfg.filter.probe_elements)
    grad = mean_gradient(model, batches)
    compressed = pseudo_gradient(state, grad, lr, codec, cfg.codec.momentum, cfg.codec.error_feedback_after)
    return MinedWindow(window, state.uid, compressed, probe, pages)


def submission_bytes(mined: MinedWindow, fingerprint: str, codec: Codec) -> bytes:
    return write_submission(mined.window, mined.uid, fingerprint, codec, mined.compressed, mined.probe)
