"""Flow tests run against Prefect's test harness (a temporary API with a fresh database)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.testing.utilities import prefect_test_harness

from gauntlet.localnet.network import Network, init_network

# One of each stage-1 outcome that matters for the flow's tables, plus honest peers.
ROSTER = ["honest"] * 5 + ["late", "copycat", "malformed"]


@pytest.fixture(scope="session", autouse=True)
def prefect_api():
    with prefect_test_harness(server_startup_timeout=90):
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield


def make_network(folder: Path, prepared_data: tuple[Path, Path], roster: list[str] = ROSTER,
                 overrides: Sequence[str] = ()) -> Network:
    """A local network for flow tests; `overrides` (`section.field=value`) go into its config.toml."""
    corpus, tokenizer = prepared_data
    return init_network(folder, behaviours=roster, corpus=corpus, tokenizer=tokenizer, force=True,
                        overrides=["filter.put_window_s=1.0", *overrides])
