"""Issue 13: the commands a newcomer types first start without torch, prefect or bittensor.

Each command runs the installed entry point's `main` in a fresh interpreter, then lists which of
the heavy modules ended up in `sys.modules` (importing them costs about 9 s together).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import COMMANDS
from gauntlet.cli import CORE

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "prefect", "bittensor", "flows.validate", "flows.follow", "flows.localnet")
PROBE = """
import contextlib, io, json, sys
from flows.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
    try:
        code = main(json.loads(sys.argv[1]))
    except SystemExit as exc:
        code = exc.code
heavy = json.loads(sys.argv[2])
print(json.dumps({"code": code, "heavy": sorted(m for m in heavy if m in sys.modules), "out": out.getvalue()}))
"""


def _run(argv: list[str]) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv), json.dumps(HEAVY)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout)


LIGHT = [["--help"], ["config"], ["config", "--explain"], ["audit", "--schema"], ["audit", "--help"],
         ["explain", "--help"], ["replay", "--help"], ["adit"]]
if any(c.name == "status" for c in CORE):
    LIGHT.append(["status", "--help"])


@pytest.mark.parametrize("argv", LIGHT, ids=" ".join)
def test_light_commands_import_nothing_heavy(argv: list[str]) -> None:
    result = _run(argv)
    assert result["heavy"] == []
    assert result["code"] == (2 if argv == ["adit"] else 0)


def test_audit_and_explain_on_a_root_import_nothing_heavy(tmp_path: Path) -> None:
    """The real work of `audit` and `explain` (DuckDB over Parquet) needs no model either."""
    from gauntlet.audit import AuditStore
    from tests.gauntlet.audit import LATE, synthetic_window

    AuditStore(tmp_path).write_window(0, synthetic_window(0))
    audit = _run(["audit", "--root", str(tmp_path), "--format", "json", "SELECT count(*) AS n FROM verdicts"])
    assert audit["code"] == 0 and json.loads(audit["out"])[0]["n"] > 0 and audit["heavy"] == []
    explain = _run(["explain", "--root", str(tmp_path), "--uid", str(LATE), "--window", "0"])
    assert explain["code"] == 0 and "too_late" in explain["out"] and explain["heavy"] == []


def test_help_lists_the_flow_commands_without_importing_them() -> None:
    result = _run(["--help"])
    for command in (*CORE, *COMMANDS):
        assert command.name in result["out"]
