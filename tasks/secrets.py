"""The wallet's location from Prefect Secret blocks, so it need not live in a TOML file or a unit file.

Each Secret block that exists is copied into the environment variable that `gauntlet.config`
already reads (`GAUNTLET_<SECTION>__<FIELD>`), inside the flow run's process: the value reaches
the config, and through it the window subflow, without ever being a flow parameter (which the UI
shows). A variable the operator set explicitly wins over the block. Create them once with
`prefect block create secret` in the UI, or `Secret(value=...).save("gauntlet-wallet-path")`.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from prefect.blocks.system import Secret

SECRET_ENV: dict[str, str] = {
    "gauntlet-wallet-path": "GAUNTLET_CHAIN__WALLET_PATH",
    "gauntlet-wallet-name": "GAUNTLET_CHAIN__WALLET_NAME",
    "gauntlet-wallet-hotkey": "GAUNTLET_CHAIN__WALLET_HOTKEY",
}
"""Secret block name -> the config's environment variable it fills."""


def secrets_to_env(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Fill unset variables from the Secret blocks that exist; returns the variables filled
    (names only: the values are never logged)."""
    environ = os.environ if environ is None else environ
    filled = []
    for block, variable in SECRET_ENV.items():
        if variable in environ:
            continue
        try:
            value = Secret.load(block).get()
        except ValueError:  # no such block: the setting comes from the config file as before
            continue
        environ[variable] = str(value)
        filled.append(variable)
    return filled
