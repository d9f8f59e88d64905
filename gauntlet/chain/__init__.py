"""The chain: a small protocol (`Chain`), the local ledger and the bittensor adapter.

`open_chain(cfg)` is the one place that picks between them, so flows and miners never branch on
the network. The bittensor SDK is imported only when a real network is asked for.
"""

from __future__ import annotations

from typing import Any

from gauntlet.chain.base import (
    MAX_COMMITMENT_BYTES,
    Chain,
    ChainError,
    Neuron,
    WeightsResult,
    check_weights,
    to_u16,
)
from gauntlet.chain.local import LocalChain, WeightsRecord
from gauntlet.config import ChainConfig, ConfigError

__all__ = [
    "MAX_COMMITMENT_BYTES", "Chain", "ChainError", "LocalChain", "Neuron", "WeightsRecord",
    "WeightsResult", "check_weights", "open_chain", "to_u16",
]


def open_chain(cfg: ChainConfig, *, substrate: Any = None) -> Chain:
    """`network = "local"`: the ledger file at `cfg.ledger` (created on first use); otherwise the
    bittensor network of that name or URL, signing with the configured wallet's hotkey."""
    if cfg.network == "local":
        return LocalChain(cfg.ledger, netuid=cfg.netuid, blocks_per_window=cfg.blocks_per_window,
                          block_time_s=cfg.block_time_s)
    if cfg.netuid is None:
        raise ConfigError(f"chain.netuid is not set for network {cfg.network!r}: set it to your subnet's netuid "
                          "(in the config file, GAUNTLET_CHAIN__NETUID=N or --set chain.netuid=N)")
    from gauntlet.chain.bittensor import BittensorChain

    return BittensorChain(cfg.network, cfg.netuid, cfg.wallet_name, cfg.wallet_hotkey, cfg.wallet_path,
                          substrate=substrate)
