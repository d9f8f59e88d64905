"""One real `prefect server start` for every test of the deployments, alerts and events.

Session-scoped (a server costs about 7 s to start), and no `prefect_test_harness` here: these
tests talk to the real server, from subprocesses given its URL or in-process through
`temporary_settings`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tests.flows.prefect_server import (
    STARTUP_TIMEOUT_S,
    PrefectServer,
    _healthy,
    base_env,
    free_port,
    process,
    wait_until,
)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    folder = tmp_path_factory.mktemp("live-prefect-server")
    home, log = folder / "home", folder / "server.log"
    home.mkdir()
    port = free_port()
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
           "--port", str(port), "--analytics-off"]
    with process(cmd, base_env(home), log) as proc:
        url = f"http://127.0.0.1:{port}/api"
        wait_until(lambda: _healthy(url), STARTUP_TIMEOUT_S, "prefect server start", proc, log)
        yield PrefectServer(url, home, log, proc)
