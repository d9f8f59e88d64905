"""A validator killed in the middle of a window: on restart the window is redone, every audit row
exists once, weights went to the chain once, and the ratings equal an uninterrupted run's.

The validator runs as a real subprocess (`gauntlet validate`, the Prefect flow) and is sent
SIGKILL at two points: while it fetches and scores (the archive exists) and right after it
recorded its intent to set weights (the weights journal exists).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gauntlet.audit.store import AuditStore
from gauntlet.window.pipeline import Direct, validate_window
from tests.conftest import copy_network

pytestmark = [pytest.mark.slow, pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]


def _start(folder: Path, window: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "flows.cli", "validate", "--network", str(folder), "--window", str(window)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Its own process group: the validator starts a temporary Prefect API server as a child,
    # which a SIGKILL of the validator alone would leave running (orphaned) after the test.
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def _kill_when(proc: subprocess.Popen, path: Path, timeout_s: float = 240.0) -> bool:
    """SIGKILL the validator as soon as `path` exists; False if it finished first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            os.killpg(proc.pid, signal.SIGKILL)  # the validator and its temporary API server
            proc.wait()
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    raise TimeoutError(f"{path} never appeared: {proc.stderr.read().decode()[-2000:]}")


@pytest.fixture(scope="module")
def networks(validated_network, tmp_path_factory):
    """Two copies of the session's mined network, nobody's validation in them: one to kill, one
    validated without interruption as the reference."""
    base = tmp_path_factory.mktemp("kill")
    net = copy_network(validated_network[0], base / "killed", validated=False)
    calm = copy_network(validated_network[0], base / "calm", validated=False)
    for copy in (net, calm):  # past the rate limit of the original validator's last weights
        copy.chain.produce_blocks(copy.chain.weights_rate_limit + 1)
    hotkey = calm.config.validator.hotkey
    before = len(calm.chain.weights_history(hotkey=hotkey))
    for window in (0, 1):
        validate_window(Direct(), calm.config, window)
    return net, calm, len(calm.chain.weights_history(hotkey=hotkey)) - before


def test_killed_mid_window_redoes_it_with_no_row_lost_or_doubled(networks):
    net, calm, calm_sent = networks
    cfg, work = net.config, Path(net.config.validator.workdir)
    before = len(net.chain.weights_history(hotkey=cfg.validator.hotkey))  # the copied ledger's history
    killed_at = [_kill_when(_start(net.folder, 0), work / "archive" / f"{0:08d}"),
                 _kill_when(_start(net.folder, 0), work / "weights-journal" / f"{0:08d}.json")]
    assert any(killed_at), "the validator finished before it could be killed"
    assert not AuditStore(cfg.audit.root).has_window(0)  # nothing half-written is visible
    for window in (0, 1):
        restarted = _start(net.folder, window)
        assert restarted.wait(timeout=300) == 0, restarted.stderr.read().decode()[-3000:]
    store, reference = AuditStore(cfg.audit.root), AuditStore(calm.config.audit.root)
    assert store.windows() == reference.windows() == [0, 1]
    for window in (0, 1):
        for table in ("verdicts", "scores", "ratings"):
            ours, theirs = store.read(table, window_id=window), reference.read(table, window_id=window)
            assert ours.height == theirs.height and ours.equals(theirs), (table, window)
        ours, theirs = (s.read("weights", window_id=window).select("uid", "weight") for s in (store, reference))
        assert ours.equals(theirs)
    sent = len(net.chain.weights_history(hotkey=cfg.validator.hotkey)) - before
    assert sent == calm_sent >= 1, f"weights landed {sent} times, {calm_sent} without the kills"
