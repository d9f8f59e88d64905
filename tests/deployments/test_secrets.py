"""The wallet's location from Secret blocks on a real Prefect server, into the config."""

from __future__ import annotations

import pytest
from prefect.blocks.system import Secret
from prefect.settings import PREFECT_API_URL, temporary_settings

from gauntlet.config import load_config
from tasks.secrets import secrets_to_env
from tests.flows.prefect_server import PrefectServer

pytestmark = [pytest.mark.integration]


def test_secret_blocks_fill_the_wallet_settings(live_server: PrefectServer, tmp_path):
    with temporary_settings(updates={PREFECT_API_URL: live_server.url}):
        Secret(value=str(tmp_path / "wallets")).save("gauntlet-wallet-path", overwrite=True)
        Secret(value="ops").save("gauntlet-wallet-name", overwrite=True)
        environ = {"GAUNTLET_CHAIN__WALLET_NAME": "chosen-by-hand"}
        filled = secrets_to_env(environ)
    assert filled == ["GAUNTLET_CHAIN__WALLET_PATH"]  # the hand-set name wins; no hotkey block exists
    cfg = load_config(environ=environ)
    assert cfg.chain.wallet_path == str(tmp_path / "wallets") and cfg.chain.wallet_name == "chosen-by-hand"
