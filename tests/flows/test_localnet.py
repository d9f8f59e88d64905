"""`gauntlet demo`'s flow: a previous network kept, Prefect's logs in a file, progress on the
terminal, every mined window validated, and the report with its chart and artifact."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from flows.localnet import LOG_NAME, set_aside
from gauntlet.audit.store import AuditStore
from tests.flows.conftest import make_network

ROOT = Path(__file__).resolve().parents[2]


def test_set_aside_keeps_a_network_under_a_dated_name(tmp_path: Path) -> None:
    folder = tmp_path / "localnet"
    assert set_aside(folder) is None
    folder.mkdir()
    (folder / "manifest.json").write_text("{}")
    now = datetime(2026, 11, 30, 16, 12)
    assert set_aside(folder, now) == tmp_path / "localnet-20261130-1612" and not folder.exists()
    folder.mkdir()
    (folder / "chain.sqlite").write_text("")
    assert set_aside(folder, now) == tmp_path / "localnet-20261130-1612-2"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="does not look like a network"):
        set_aside(folder, now)


def test_demo_validates_every_mined_window_and_reports(tmp_path: Path, prepared_data) -> None:
    """`gauntlet demo` as a user runs it, in its own process (Prefect's logging set up by Prefect
    alone, not by this test session): progress on the terminal, Prefect's lines in the file."""
    folder = tmp_path / "localnet"
    net = make_network(folder, prepared_data, ["honest"] * 3 + ["copycat"])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_LOGGING_LEVEL": "INFO"}
    cmd = [sys.executable, "-m", "flows.cli", "demo", "--windows", "2", "--peers", "4", "--network", str(folder),
           "--resume"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = proc.stdout + proc.stderr
    assert AuditStore(net.config.audit.root).windows() == [0, 1]  # both mined windows, the last one drained
    assert f"Prefect's log lines go to {folder / LOG_NAME}" in shown
    progress = [ln for ln in shown.splitlines() if "validated window" in ln]
    assert [ln.split("] ")[1].split(":")[0] for ln in progress] == ["validated window 1 of 2 (#0)",
                                                                    "validated window 2 of 2 (#1)"]
    assert "copied 1" in progress[0]
    log = (folder / LOG_NAME).read_text()
    assert "Finished in state Completed()" in log and "Beginning flow run" in log
    assert "Finished in state" not in shown  # Prefect's lines went to the file only
    assert (folder / "report.png").stat().st_size > 10_000 and str(folder / "report.png") in shown
    assert "copycat" in shown and "Validation loss" in shown