"""`gauntlet demo`'s flow: a previous network kept, Prefect's logs in a file, progress on the
terminal, every mined window validated, and the report with its chart and artifact."""

from __future__ import annotations

import io
import logging
from datetime import datetime
from pathlib import Path

import pytest
from prefect.artifacts import Artifact

from flows.localnet import LOG_NAME, run_demo, set_aside
from gauntlet.audit.store import AuditStore
from gauntlet.progress import Progress
from tests.flows.conftest import make_network


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


def test_demo_validates_every_mined_window_and_reports(tmp_path: Path, prepared_data, monkeypatch,
                                                       capsys) -> None:
    folder = tmp_path / "localnet"
    net = make_network(folder, prepared_data, ["honest"] * 3 + ["copycat"])
    shown = io.StringIO()
    prefect_log = logging.getLogger("prefect")
    monkeypatch.setattr(prefect_log, "level", logging.INFO)  # the tests' default is WARNING
    monkeypatch.setattr("flows.localnet.Progress", lambda total: Progress(total, stream=shown, live=False))
    text = run_demo(2, 4, folder, resume=True)
    assert AuditStore(net.config.audit.root).windows() == [0, 1]  # both mined windows, the last one drained
    lines = shown.getvalue().splitlines()
    assert lines[0] == f"Prefect's log lines go to {folder / LOG_NAME}"
    assert [ln.split("] ")[1].split(":")[0] for ln in lines[1:]] == ["validated window 1 of 2 (#0)",
                                                                     "validated window 2 of 2 (#1)"]
    assert "copied 1" in lines[1]
    log = (folder / LOG_NAME).read_text()
    assert "Finished in state Completed()" in log and "Beginning flow run" in log
    assert "Finished in state" not in capsys.readouterr().err  # Prefect's lines went to the file only
    assert (folder / "report.png").stat().st_size > 10_000 and str(folder / "report.png") in text
    assert "copycat" in text and "Validation loss" in text
    artifact = Artifact.get("localnet-report")
    assert artifact is not None and "honest work" in artifact.data
    ours = [h for h in logging.getLogger().handlers if getattr(h, "baseFilename", "") == str(folder / LOG_NAME)]
    assert not ours  # the terminal's handlers are back once the demo is over
