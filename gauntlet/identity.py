"""Who the validator is: on a bittensor chain its wallet, not its config, says so.

The bittensor SDK is imported only here and in gauntlet/chain/bittensor.py, and only when a real
network is configured, so the core and the local network start without it.
"""

from __future__ import annotations

from gauntlet.config import ConfigError, GauntletConfig, with_overrides


def with_identity(cfg: GauntletConfig) -> GauntletConfig:
    """The config with `validator.hotkey` read from the wallet files (offline) on a real chain, so
    every stage excludes the right uid, signs with it and records it."""
    if cfg.chain.network == "local":
        return cfg
    from gauntlet.chain.bittensor import wallet_hotkey  # the SDK, only for a real chain

    try:
        hotkey = wallet_hotkey(cfg.chain)
    except FileNotFoundError as exc:
        raise ConfigError(f"the validator's wallet hotkey is missing ({exc}); create it with btcli or set "
                          "chain.wallet_name, chain.wallet_hotkey and chain.wallet_path") from exc
    return with_overrides(cfg, {"validator": {"hotkey": hotkey}})
