"""A real Prefect server and processes that talk to it, each with an explicit environment.

The autouse `prefect_test_harness` points PREFECT_API_URL at its own API only inside the test
process (temporary settings, not `os.environ`), so the subprocesses started here never see it:
they get the environment built by `client_env`, and the test talks to the server over HTTP.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prefect.client.base import PrefectHttpxSyncClient

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 90.0
"""`prefect server start` is healthy after about 7 s on an idle 2-core machine; leave room."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, chars: int = 6000) -> str:
    """The end of a process's log, for assertion messages."""
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    return f"--- {path.name} ---\n{text[-chars:]}"


def base_env(home: Path) -> dict[str, str]:
    """This process's environment without any Prefect setting, plus a home of our own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_LOGGING_LEVEL="INFO", OMP_NUM_THREADS="1")
    return env


@contextmanager
def process(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """Run `cmd` in its own process group (so its children go too) and stop it on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            yield proc
        finally:
            stop(proc)


def stop(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM the process group (Prefect's server and runner stop on it), SIGKILL if it lingers."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass(frozen=True)
class PrefectServer:
    url: str
    """The API root, e.g. http://127.0.0.1:4321/api."""
    home: Path
    log: Path
    proc: subprocess.Popen

    def client_env(self, **extra: str) -> dict[str, str]:
        """The environment of a process that should use this server (a runner, a flow run)."""
        return {**base_env(self.home), "PREFECT_API_URL": self.url, **extra}

    def api(self) -> httpx.Client:
        """Prefect's own HTTP client: it retries 503 (SQLite's "database is locked" while the runner
        writes a burst of events) with back-off, as every Prefect process does; it leaves the
        status checks to the test."""
        return PrefectHttpxSyncClient(base_url=self.url, timeout=30.0, raise_on_all_errors=False)


def wait_until(check, timeout_s: float, what: str, proc: subprocess.Popen, log: Path, every_s: float = 0.5):
    """Poll `check()` until it returns something truthy; fail early if `proc` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what}: the process exited with {proc.returncode}\n{tail(log)}")
        result = check()
        if result:
            return result
        time.sleep(every_s)
    pytest.fail(f"{what}: not done after {timeout_s:.0f} s\n{tail(log)}")


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=5.0).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """`prefect server start` on a free port of 127.0.0.1, with a fresh home (its own database)."""
    folder = tmp_path_factory.mktemp("prefect-server")
    home, log = folder / "home", folder / "server.log"
    home.mkdir()
    port = free_port()
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
           "--port", str(port), "--analytics-off"]
    with process(cmd, base_env(home), log) as proc:
        url = f"http://127.0.0.1:{port}/api"
        wait_until(lambda: _healthy(url), STARTUP_TIMEOUT_S, "prefect server start", proc, log)
        yield PrefectServer(url, home, log, proc)
