"""Window arithmetic: blocks to windows, and the put window measured on the chain's clock.

A window is `blocks_per_window` consecutive blocks; window W's uploads are judged against the
timestamp of the first block of W + 1 (`t_min`) and `t_min + put_window_s` (`t_max`), both read
from the chain so that every validator computes the same bounds.
"""

from __future__ import annotations

from gauntlet.chain.base import Chain
from gauntlet.config import ChainConfig


def _check(value: int, name: str, blocks_per_window: int) -> None:
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    if blocks_per_window < 1:
        raise ValueError(f"blocks_per_window must be >= 1, got {blocks_per_window}")


def window_of(block: int, blocks_per_window: int) -> int:
    _check(block, "block", blocks_per_window)
    return block // blocks_per_window


def first_block(window: int, blocks_per_window: int) -> int:
    _check(window, "window", blocks_per_window)
    return window * blocks_per_window


def put_window(chain: Chain, window: int, blocks_per_window: int, put_window_s: float) -> tuple[float, float]:
    """(t_min, t_max) in unix seconds. Raises `ChainError` (not_found) until window + 1 has begun."""
    if put_window_s <= 0:
        raise ValueError(f"put_window_s must be > 0, got {put_window_s}")
    t_min = chain.block_timestamp(first_block(window + 1, blocks_per_window))
    return t_min, t_min + put_window_s


def closed_window(current_block: int, cfg: ChainConfig) -> int | None:
    """The newest window ready to validate at `current_block`, or None before the first one."""
    window = window_of(current_block, cfg.blocks_per_window) - cfg.validator_offset
    return window if window >= cfg.start_window else None


def global_step(window: int, start_window: int) -> int:
    if window < start_window:
        raise ValueError(f"window {window} is before the start window {start_window}")
    return window - start_window


class NotReady(RuntimeError):
    """The chain has not reached the window's validation point yet."""


def ready_block(window: int, cfg: ChainConfig) -> int:
    """The first block at which window W may be validated: the start of W + validator_offset."""
    return first_block(window + cfg.validator_offset, cfg.blocks_per_window)


def ensure_ready(current_block: int, window: int, cfg: ChainConfig) -> None:
    """The one readiness rule (``closed_window`` is its inverse); raises `NotReady` before it."""
    if current_block < ready_block(window, cfg):
        raise NotReady(f"window {window} can be validated from block {ready_block(window, cfg)}; "
                       f"chain is at {current_block}")
