from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from gauntlet.audit import SCHEMAS, TABLES, AuditStore
from gauntlet.audit.cli import DEFAULT_ROOT, register
from gauntlet.config import AuditConfig
from tests.gauntlet.audit import COPYCAT, HONEST, LATE, synthetic_window


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audit")
    for window in range(3):
        AuditStore(path).write_window(window, synthetic_window(window))
    return path


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="gauntlet")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_default_root_is_the_config_setting() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["audit", "SELECT 1"]).root == DEFAULT_ROOT == AuditConfig().root
    assert parser.parse_args(["explain", "--uid", "1", "--window", "2"]).history == 5


def test_audit_answers_a_query(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sql = f"SELECT window_id, reason FROM verdicts WHERE uid = {LATE} ORDER BY window_id"
    assert _run("audit", sql, "--root", str(root), "--format", "json") == 0
    assert json.loads(capsys.readouterr().out) == [{"window_id": w, "reason": "too_late"} for w in range(3)]
    assert _run("audit", sql, "--root", str(root), "--format", "csv") == 0
    assert capsys.readouterr().out.splitlines() == ["window_id,reason"] + [f"{w},too_late" for w in range(3)]
    assert _run("audit", sql, "--root", str(root)) == 0
    assert "too_late" in capsys.readouterr().out


def test_audit_refuses_a_write(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = root.parent / "leak.csv"
    assert _run("audit", f"COPY (SELECT * FROM scores) TO '{target}'", "--root", str(root)) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "error: COPY refused" in captured.err and "read-only" in captured.err
    assert not target.exists()
    assert _run("audit", "DELETE FROM scores", "--root", str(root)) == 2
    assert "read-only" in capsys.readouterr().err


def test_audit_errors(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("audit", "--root", str(root)) == 2
    assert "give a SQL statement" in capsys.readouterr().err
    assert _run("audit", "SELECT nope FROM scores", "--root", str(root)) == 2
    assert "nope" in capsys.readouterr().err
    assert _run("audit", "SELECT 1", "--root", str(tmp_path / "absent")) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _run("audit", "SELECT 1", "--format", "xml")


def test_audit_schema_lists_every_column(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("audit", "--schema") == 0
    out = capsys.readouterr().out
    for table in TABLES:
        assert f"\n{table}\n" in f"\n{out}"
        for name in SCHEMAS[table].names:
            assert f"  {name} " in out
    assert "s_k = (L_rand_before - L_rand_after) / L_rand_before" in out
    assert "TIMESTAMPTZ" in out and "VARCHAR[]" in out


def test_explain_command(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("explain", "--uid", str(LATE), "--window", "2", "--root", str(root), "--history", "1") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"uid {LATE} in window 2") and "too_late" in out and "window 1: too_late" in out
    assert _run("explain", "--uid", str(COPYCAT), "--window", "1", "--root", str(root)) == 0
    assert "copied" in capsys.readouterr().out


def test_explain_errors(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("explain", "--uid", str(HONEST), "--window", "40", "--root", str(root)) == 2
    assert "window 40 has no complete audit rows" in capsys.readouterr().err
    assert _run("explain", "--uid", "77", "--window", "1", "--root", str(root)) == 2
    assert "uid 77 has no rows in window 1" in capsys.readouterr().err
    assert _run("explain", "--uid", "1", "--window", "1", "--root", str(tmp_path / "absent")) == 2
    assert "does not exist" in capsys.readouterr().err
