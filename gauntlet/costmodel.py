"""The forward-pass floor of stage 2: what scoring P peers must cost, from the model's shape.

Scoring is forward passes and nothing else worth counting, so its cost has a floor that a
config and a device's FLOP rate fix before anything runs. This module computes it, so that a
benchmark can put the measured time next to it (`scoring_efficiency` = measured / floor) and an
operator can ask how many peers a window holds, or how many GPUs a 250-peer window needs.

FLOPs per token of one forward pass of a LLaMA (the PaLM appendix-B convention, forward only):

    2 * N_matmul + n_layers * 2 * 2 * seq_len * hidden

where `N_matmul` counts the weights that take part in a matrix product: per layer the query and
output projections (hidden^2 each), the key and value projections (hidden * kv_heads * head_dim
each) and the SwiGLU MLP (3 * hidden * intermediate), plus the LM head (hidden * vocab). The
embedding is a lookup and the norms are elementwise, so neither counts. The second term is
attention: QK^T and AV, each 2 * seq_len * hidden per token per layer (full, not causal, as in
the usual MFU convention). Softmax, RMSNorm, SiLU and the loss are left out: the floor is the
matrix work a perfect kernel cannot avoid.

Tokens per scored loader follow the data path (`gauntlet.data`): each page is packed on its own
into `floor(rows_per_page * tokens_per_row / seq_len)` sequences, a loader's sequences are cut
into batches of `batch_size`, and `max(1, floor(sample_rate * n_batches))` batches are scored.
`tokens_per_row` is an assumption (the corpus decides it), hence a parameter.

One peer costs forwards on its own batches before and after its step and on the random batches
after; the random before is shared by the window (ours, `shared_random_batches`) or paid per
peer (paper). Pure Python: no torch, unless a size is given by name (`gauntlet.model.SIZES`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from gauntlet.config import GauntletConfig

H200_BF16_DENSE = 989e12
"""Peak dense bf16 FLOP/s of one H200 (SXM), without sparsity."""
H200_BANDWIDTH = 4.8e12
"""HBM bytes/s of one H200."""
PAPER_VOCAB = 32000
"""The paper's LLaMA-2 tokenizer."""
FINEWEB_TOKENS_PER_ROW = 1000.0
"""Assumed mean document length of FineWeb-edu in LLaMA-2 tokens (sample-10BT: about 10B tokens
in 9.7M documents)."""


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int

    @staticmethod
    def of(size: str | Mapping[str, int]) -> Shape:
        """From a size name of `gauntlet.model.SIZES` (imports torch) or LlamaConfig keywords."""
        if isinstance(size, str):
            from gauntlet.model import SIZES  # the sizes live with the model; torch comes with them
            if size not in SIZES:
                raise ValueError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)}")
            size = SIZES[size]
        try:
            return Shape(size["hidden_size"], size["num_hidden_layers"], size["num_attention_heads"],
                         size["num_key_value_heads"], size["intermediate_size"])
        except KeyError as exc:
            raise ValueError(f"model shape lacks {exc.args[0]!r}") from None


def matmul_params(size: str | Mapping[str, int] | Shape, vocab: int) -> int:
    """Weights that take part in a matrix product per token (embedding and norms excluded)."""
    s = size if isinstance(size, Shape) else Shape.of(size)
    if s.hidden % s.heads:
        raise ValueError(f"hidden {s.hidden} is not a multiple of heads {s.heads}")
    kv = s.kv_heads * (s.hidden // s.heads)
    per_layer = 2 * s.hidden * s.hidden + 2 * s.hidden * kv + 3 * s.hidden * s.intermediate
    return s.layers * per_layer + s.hidden * vocab


def total_params(size: str | Mapping[str, int] | Shape, vocab: int) -> int:
    """All parameters: the matmul weights, the embedding and the RMSNorm gains."""
    s = size if isinstance(size, Shape) else Shape.of(size)
    return matmul_params(s, vocab) + s.hidden * vocab + (2 * s.layers + 1) * s.hidden


def forward_flops_per_token(size: str | Mapping[str, int] | Shape, vocab: int, seq_len: int) -> float:
    """`2 * N_matmul + layers * 2 * 2 * seq_len * hidden` (see the module docstring)."""
    if vocab < 1 or seq_len < 1:
        raise ValueError(f"vocab and seq_len must be positive, got {vocab}, {seq_len}")
    s = size if isinstance(size, Shape) else Shape.of(size)
    return 2.0 * matmul_params(s, vocab) + s.layers * 4.0 * seq_len * s.hidden


def loader_batches(cfg: GauntletConfig, pages: int, tokens_per_row: float) -> int:
    """Batches a loader of `pages` pages holds (the last one may be short)."""
    d = cfg.data
    seqs = pages * math.floor(d.rows_per_page * tokens_per_row / d.seq_len)
    if seqs < 1:
        raise ValueError(f"{pages} pages of {d.rows_per_page} rows at {tokens_per_row} tokens a row hold no "
                         f"sequence of {d.seq_len} tokens")
    return math.ceil(seqs / d.batch_size)


def sampled_tokens(cfg: GauntletConfig, pages: int, tokens_per_row: float) -> int:
    """Tokens in the sampled batches of one loader (taken as full batches: an upper bound)."""
    n = loader_batches(cfg, pages, tokens_per_row)
    k = max(1, math.floor(cfg.scoring.sample_rate * n + 1e-9))
    return min(k * cfg.data.batch_size, pages * math.floor(cfg.data.rows_per_page * tokens_per_row
                                                            / cfg.data.seq_len)) * cfg.data.seq_len


def decode_flops(cfg: GauntletConfig, params: int) -> float:
    """The inverse DCT of one dense delta: two length-`chunk` transforms per element, 2 FLOPs a MAC."""
    return 4.0 * cfg.codec.chunk * params


@dataclass(frozen=True)
class ScoringCost:
    """FLOPs and bytes of stage 2 for one config; build with `ScoringCost.of`."""

    flops_per_token: float
    own_tokens: int
    rand_tokens: int
    shared_random: bool
    params: int
    decode: float

    @staticmethod
    def of(cfg: GauntletConfig, vocab: int, tokens_per_row: float = FINEWEB_TOKENS_PER_ROW) -> ScoringCost:
        size, d = cfg.model.size, cfg.data
        params = total_params(size, vocab)
        return ScoringCost(forward_flops_per_token(size, vocab, d.seq_len),
                           sampled_tokens(cfg, d.pages_per_window, tokens_per_row),
                           sampled_tokens(cfg, cfg.scoring.random_pages, tokens_per_row),
                           cfg.scoring.shared_random_batches, params, decode_flops(cfg, params))

    def peer_flops(self) -> float:
        """One peer scored exactly: own before and after, random after (and before if not shared)."""
        rand = self.rand_tokens * (1 if self.shared_random else 2)
        return self.flops_per_token * (2 * self.own_tokens + rand) + self.decode

    def window_flops(self, n_peers: int) -> float:
        """Every peer scored exactly, plus the shared random before once."""
        shared = self.flops_per_token * self.rand_tokens if self.shared_random else 0.0
        return shared + n_peers * self.peer_flops()

    def screening_flops(self) -> float:
        """Once a window: forward and backward (2x the forward) on the random batches."""
        return 3.0 * self.flops_per_token * self.rand_tokens

    def screen_seconds(self, device_flops: float, bandwidth: float) -> float:
        """One peer's estimate: decode its delta, then read it and the gradient (fp32) once."""
        return self.decode / device_flops + 8.0 * self.params / bandwidth


def exact_peers(cfg: GauntletConfig, n_peers: int) -> int:
    """Most peers `gauntlet.screening.choose_exact` scores exactly in a window of `n_peers`."""
    s = cfg.screening
    return min(n_peers, cfg.aggregation.gather_size + s.margin + s.max_near + s.audit_peers)


def _rate(device_flops: float, mfu: float) -> float:
    if device_flops <= 0 or not 0 < mfu <= 1:
        raise ValueError(f"device_flops must be > 0 and mfu in (0, 1], got {device_flops}, {mfu}")
    return device_flops * mfu


def window_seconds(cfg: GauntletConfig, n_peers: int, device_flops: float, *, mfu: float = 1.0,
                   vocab: int = PAPER_VOCAB, tokens_per_row: float = FINEWEB_TOKENS_PER_ROW,
                   screening: bool = False, bandwidth: float = H200_BANDWIDTH, devices: int = 1) -> float:
    """Stage 2's time for `n_peers` on `devices` equal devices, each of which does the once-a-window
    work itself (no broadcast) and an equal share of the peers."""
    if n_peers < 0 or devices < 1:
        raise ValueError(f"n_peers must be >= 0 and devices >= 1, got {n_peers}, {devices}")
    cost, rate = ScoringCost.of(cfg, vocab, tokens_per_row), _rate(device_flops, mfu)
    if not screening:
        shared = cost.window_flops(0)
        return (shared + math.ceil(n_peers / devices) * cost.peer_flops()) / rate
    if not cost.shared_random:
        raise ValueError("screening needs scoring.shared_random_batches: one gradient serves the window")
    exact = math.ceil(exact_peers(cfg, n_peers) / devices)
    screened = math.ceil(n_peers / devices) * cost.screen_seconds(rate, bandwidth)
    return (cost.screening_flops() + exact * cost.peer_flops()) / rate + screened


def scoring_floor(cfg: GauntletConfig, n_peers: int, device_flops: float, **kw: object) -> float:
    """Seconds that scoring `n_peers` exactly cannot go under at `device_flops` (MFU 1)."""
    return window_seconds(cfg, n_peers, device_flops, **kw)  # type: ignore[arg-type]


def _window_s(cfg: GauntletConfig, window_s: float | None) -> float:
    return cfg.chain.blocks_per_window * cfg.chain.block_time_s if window_s is None else window_s


def peers_per_window(cfg: GauntletConfig, window_s: float | None, device_flops: float, mfu: float,
                     screening: bool = False, max_peers: int = 1 << 20, **kw: object) -> int:
    """The most peers scored within `window_s` (None: the chain's window length) on one device."""
    budget = _window_s(cfg, window_s)
    fits = lambda n: window_seconds(cfg, n, device_flops, mfu=mfu, screening=screening, **kw) <= budget  # noqa: E731
    if not fits(0):
        return 0
    lo, hi = 0, max_peers  # fits(lo) holds; the time grows with n, so bisect
    if fits(hi):
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def gpus_needed(cfg: GauntletConfig, n_peers: int, device_flops: float, mfu: float, *,
                window_s: float | None = None, screening: bool = False, max_devices: int = 4096,
                **kw: object) -> int | None:
    """The fewest devices that score `n_peers` within the window; None when no number does
    (the once-a-window work alone overruns it)."""
    budget = _window_s(cfg, window_s)
    for devices in range(1, max_devices + 1):
        if window_seconds(cfg, n_peers, device_flops, mfu=mfu, screening=screening, devices=devices,
                          **kw) <= budget:
            return devices
        if devices >= n_peers:
            return None
    return None
