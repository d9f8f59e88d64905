"""The architecture: imports point down only (flows -> tasks -> gauntlet), proven, not hoped."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(folder: str) -> set[tuple[str, str]]:
    found = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {(str(path.relative_to(ROOT)), a.name.split(".")[0]) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((str(path.relative_to(ROOT)), node.module.split(".")[0]))
    return found


def test_core_never_imports_prefect_flows_or_tasks():
    bad = {(f, m) for f, m in _imports("gauntlet") if m in {"prefect", "prefect_dask", "flows", "tasks", "deployments"}}
    assert not bad, bad


def test_tasks_never_import_flows():
    assert not {(f, m) for f, m in _imports("tasks") if m in {"flows", "deployments"}}


def test_core_imports_with_prefect_blocked():
    modules = [p.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
               for p in (ROOT / "gauntlet").rglob("*.py") if p.name != "__main__.py"]
    code = ("import sys, importlib; sys.modules['prefect'] = None; sys.modules['prefect_dask'] = None\n"
            f"for m in {modules!r}: importlib.import_module(m.removesuffix('.__init__'))")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
