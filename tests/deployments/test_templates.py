"""The network templates: a real-network one will not connect until the operator names the subnet."""

from __future__ import annotations

from pathlib import Path

import pytest

from gauntlet.chain import open_chain
from gauntlet.config import ConfigError, load_config

TEMPLATES = Path(__file__).resolve().parents[2] / "deployments"


@pytest.mark.parametrize("name", ["mainnet.toml", "testnet.toml"])
def test_a_real_network_template_needs_a_netuid(name):
    cfg = load_config(TEMPLATES / name, environ={})
    assert cfg.chain.netuid is None and cfg.chain.network in ("finney", "test")
    with pytest.raises(ConfigError, match="chain.netuid is not set for network"):
        open_chain(cfg.chain)  # refused before any connection is attempted
    assert load_config(TEMPLATES / name, overrides=["chain.netuid=42"], environ={}).chain.netuid == 42
    assert load_config(TEMPLATES / name, environ={"GAUNTLET_CHAIN__NETUID": "7"}).chain.netuid == 7


def test_the_local_network_needs_none(tmp_path):
    cfg = load_config(TEMPLATES / "local.toml", overrides=[f"chain.ledger={tmp_path / 'l.sqlite'}"], environ={})
    assert cfg.chain.netuid is None and open_chain(cfg.chain).netuid == 3  # the ledger's own default


def test_prefect_yaml_declares_the_same_limits_as_serve():
    import yaml
    from prefect.cli.deploy._models import PrefectYamlModel

    from deployments.serve import FOLLOW_LIMIT, TRIGGER_LIMIT, schedule_interval_s

    model = PrefectYamlModel.model_validate(yaml.safe_load((TEMPLATES / "prefect.yaml").read_text()))
    limits = {d.name: d.concurrency_limit for d in model.deployments}
    expected = {"validator": FOLLOW_LIMIT, "scheduled": TRIGGER_LIMIT, "rerun": TRIGGER_LIMIT}
    for name, want in expected.items():
        assert (limits[name].limit, limits[name].collision_strategy) == (want.limit, want.collision_strategy.value)
    local = load_config(TEMPLATES / "local.toml", environ={})
    assert schedule_interval_s(local) == 60.0  # not every 8 s window
