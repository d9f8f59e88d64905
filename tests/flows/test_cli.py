"""Issue 13: the `gauntlet` command helps a newcomer: every command says what it does, a typo
gets a suggestion, a closed pipe is no traceback, `config --explain` documents every setting,
and `replay` refuses a range it cannot replay with the reason."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from flows.cli import COMMANDS, main
from gauntlet.audit import AuditStore
from gauntlet.cli import CORE, build_parser
from gauntlet.config import GauntletConfig
from gauntlet.window.plan import WindowPlan
from tests.gauntlet.audit import UIDS, synthetic_window

ROOT = Path(__file__).resolve().parents[2]


def _parsers(parser: argparse.ArgumentParser, path: str = "gauntlet"):
    """Every (sub)command parser of the tree with its name, and the help its parent lists."""
    yield path, parser, None
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        helps = {a.dest: a.help for a in action._choices_actions}
        for name, child in action.choices.items():
            for sub_path, sub, listed in _parsers(child, f"{path} {name}"):
                yield sub_path, sub, listed if sub is not child else helps[name]


@pytest.fixture(scope="module")
def full() -> argparse.ArgumentParser:
    return build_parser(COMMANDS)


def test_the_table_lists_exactly_the_real_commands_with_their_help(full: argparse.ArgumentParser) -> None:
    top = {p: listed for p, _, listed in _parsers(full) if p.count(" ") == 1}
    assert {f"gauntlet {c.name}": c.help for c in (*CORE, *COMMANDS)} == top


def test_every_command_and_argument_says_what_it_does(full: argparse.ArgumentParser) -> None:
    for path, parser, _ in _parsers(full):
        assert parser.description, f"{path} has no description"
        for action in parser._actions:
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                assert action.help, f"{path} {action.option_strings or action.dest} has no help"


def test_command_help_shows_the_description(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["replay", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "Recompute recorded windows" in out and "--details" in out


@pytest.mark.parametrize(("argv", "suggestion"), [
    (["adit", "SELECT 1"], "did you mean 'audit'?"),
    (["localnet", "iint"], "did you mean 'init'?"),
    (["audit", "--format", "jsn", "SELECT 1"], "did you mean 'json'?"),
])
def test_a_typo_gets_a_suggestion(argv: list[str], suggestion: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert suggestion in capsys.readouterr().err


def test_no_suggestion_for_nonsense(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["zzzzzz"])
    err = capsys.readouterr().err
    assert "invalid choice: 'zzzzzz'" in err and "did you mean" not in err


@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_a_closed_pipe_ends_quietly(unbuffered: str) -> None:
    """`gauntlet config | head -0`: the reader is gone before the first write."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env.update({"PYTHONUNBUFFERED": unbuffered} if unbuffered else {})
    try:
        done = subprocess.run([sys.executable, "-c", "import sys; from flows.cli import main; sys.exit(main())",
                               "config"], stdout=write_end, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
                              timeout=120)
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == 1


def test_config_prints_the_resolved_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--set", "rating.beta=20"]) == 0
    assert json.loads(capsys.readouterr().out)["rating"]["beta"] == 20


def test_config_explain_lists_every_setting_with_its_docstring(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--explain", "--set", "chain.validator_offset=3"]) == 0
    out = capsys.readouterr().out
    listed = {line.split(" = ")[0] for line in out.splitlines() if " = " in line}
    expected = {"preset"}
    for name, field in GauntletConfig.model_fields.items():
        if isinstance(field.default, BaseModel):
            expected |= {f"{name}.{key}" for key in type(field.default).model_fields}
    assert listed == expected
    assert "chain.validator_offset = 3  # Window W is validated once the chain is at window W + validator_offset" in out
    assert 'scoring.policy = "all"  # `all` (ours): every peer that passed stage 1' in out
    assert "filter.probe_elements = [10, 11]" in out


# replay: refusals name the case (unit tests of the wording: tests/gauntlet/test_replay_report.py)


@pytest.fixture(scope="module")
def audit_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Windows 0-2 and 4 recorded (3 never validated); the archived files were never kept here."""
    root = tmp_path_factory.mktemp("audit")
    for window in (0, 1, 2, 4):
        tables = synthetic_window(window)
        plan = WindowPlan(window, 8 * window, 8 * window + 7, 0.0, 10.0, "0x00", window, 4e-4,
                          {u: f"peer-{u}" for u in UIDS}, {})
        tables["windows"][0]["plan_json"] = json.dumps(plan.to_dict())
        AuditStore(root).write_window(window, tables)
    return root


@pytest.mark.parametrize(("argv", "message"), [
    (["--first", "0", "--last", "9"], "windows 0-9 are outside the recorded windows: {root} holds windows 0-2, 4"),
    (["--window", "3"], "window 3 was never validated: no audit record under {root} (recorded windows: 0-2, 4)"),
    (["--first", "3", "--last", "1"], "--first 3 is after --last 1"),
    (["--window", "2"], "window 2 is recorded, but its inputs were pruned (archived file of uid 1"),
])
def test_replay_refusals_say_why(audit_root: Path, argv: list[str], message: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--root", str(audit_root), *argv]) == 2
    captured = capsys.readouterr()
    assert message.format(root=audit_root) in captured.err and captured.out == ""


def test_replay_of_an_empty_or_missing_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--root", str(tmp_path), "--window", "0"]) == 2
    assert "no window was ever validated" in capsys.readouterr().err
    assert main(["replay", "--root", str(tmp_path / "absent"), "--window", "0"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_status_without_a_config_names_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--network", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path} holds no network ({tmp_path / 'config.toml'} is missing)" in err and "--config FILE" in err
    assert main(["status", "--config", str(tmp_path / "v.toml")]) == 2
    assert f"config file {tmp_path / 'v.toml'} does not exist" in capsys.readouterr().err
