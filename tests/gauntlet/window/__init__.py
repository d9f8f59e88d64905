"""Tests of the window's stages (gauntlet/window/)."""

from __future__ import annotations

from gauntlet.config import GauntletConfig
from gauntlet.localnet.network import Network
from gauntlet.localnet.simulate import run_network
from gauntlet.window.pipeline import Direct


def filtered_window_zero(net: Network, cfg: GauntletConfig | None = None) -> tuple:
    """Mine two windows (window 0 is then ready), then run restore, plan, fetch and filter of
    window 0 under `cfg` (the network's own by default): (cfg, plan, fetched, filtered)."""
    run_network(net, 2)
    cfg = cfg or net.config
    run = Direct()
    state = run("restore", cfg, 0)
    plan = run("plan", cfg, 0)
    fetched = run("fetch", cfg, plan)
    return cfg, plan, fetched, run("filter", cfg, plan, fetched, state)
