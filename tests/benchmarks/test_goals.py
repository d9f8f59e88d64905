"""The goals table of RESULTS.md: goals.toml read strictly, each goal checked, the table computed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.goals import GOALS, Goal, check, goals_section, load_goals

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "goals.toml"
    path.write_text(body)
    return path


def test_every_goal_names_a_key_of_the_tracked_results() -> None:
    """A goal whose key no benchmark writes would read "not measured" forever."""
    figures = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    goals = load_goals(GOALS)
    keys = {g.key for g in goals} | {k for g in goals for k in g.target_min_of}
    assert keys <= set(figures), sorted(keys - set(figures))
    assert {"honest_weight_share", "own_test_false_negative", "honest_pay_cv", "loss_ratio_gauntlet",
            "scoring_efficiency_tiny", "per_peer_time_spread", "gpu_peers_per_window"} <= {g.key for g in goals}


def test_check_says_met_missed_by_how_much_or_not_measured() -> None:
    at_least = Goal("share", ">=", "share", "why", target=0.99)
    assert check(at_least, {"share": 0.995}).status == "met"
    missed = check(at_least, {"share": 0.9})
    assert (missed.status, round(missed.gap, 6)) == ("missed", 0.09)
    for figures in ({}, {"share": None}, {"share": float("nan")}, {"share": True}, {"share": "0.995"}):
        assert check(at_least, figures).status == "not measured", figures
    zero = Goal("zeroed", "==", "zeroed", "why", target=0)
    assert check(zero, {"zeroed": 0}).status == "met"
    assert check(zero, {"zeroed": 4}).gap == 4


def test_a_target_can_be_the_smallest_of_other_figures() -> None:
    goal = Goal("ours", "<=", "ours", "why", target_min_of=("a", "b", "c"))
    figures = {"ours": 1.01, "a": 1.03, "b": 0.99, "c": None}
    verdict = check(goal, figures)
    assert (verdict.target, verdict.status, round(verdict.gap, 6)) == (0.99, "missed", 0.02)
    assert check(goal, {**figures, "ours": 0.98}).status == "met"
    assert check(goal, {"ours": 1.0}).status == "not measured"  # none of the rules measured


def test_reported_goal_is_met_by_any_number() -> None:
    goal = Goal("gpu", "reported", "gpu", "why")
    assert check(goal, {"gpu": 37}).status == "met"
    assert check(goal, {"gpu": None}).status == "not measured"


@pytest.mark.parametrize(("body", "problem"), [
    ('[[goal]]\nkey = "a"\nop = "=>"\ntarget = 1\ngoal = "g"\nwhy = "w"\n', "op '=>'"),
    ('[[goal]]\nkey = "a"\nop = ">="\ngoal = "g"\nwhy = "w"\n', "exactly one of"),
    ('[[goal]]\nkey = "a"\nop = ">="\ntarget = 1\ntarget_min_of = ["b"]\ngoal = "g"\nwhy = "w"\n', "exactly one of"),
    ('[[goal]]\nkey = "a"\nop = ">="\ntarget = "1"\ngoal = "g"\nwhy = "w"\n', "target must be a number"),
    ('[[goal]]\nkey = "a"\nop = ">="\ntarget = 1\ngoal = "g"\n', "`why`"),
    ('[[goal]]\nkey = "a"\nop = ">="\ntarget = 1\ngoal = "g"\nwhy = "w"\nwhy_not = "x"\n', "unknown field(s) why_not"),
    ('[[goal]]\nkey = "a"\nop = "reported"\ntarget = 1\ngoal = "g"\nwhy = "w"\n', "takes no target"),
    ("title = 'no goals'\n", "no [[goal]]"),
    ("[[goal]\n", "not valid TOML"),
])
def test_malformed_goals_file_names_the_problem(tmp_path: Path, body: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        load_goals(_write(tmp_path, body))
    assert problem in str(info.value)


def test_section_is_computed_from_the_goals_and_the_figures(tmp_path: Path) -> None:
    path = _write(tmp_path, """
[[goal]]
key = "cv"
op = "<="
target = 0.3
issue = 10
goal = "Pay spread | honest"
why = "alike pay"
if_missed = "power 2 over ordinals"

[[goal]]
key = "share"
op = ">="
target = 0.99
goal = "Honest share"
why = "pay honest work"
if_missed = "never shown when met"

[[goal]]
key = "gpu"
op = "reported"
goal = "GPU peers"
why = "scale"
if_missed = "no GPU in this run"
""")
    lines = goals_section({"cv": 0.6, "share": 1.0, "gpu": None}, path)
    assert "1 met, 1 missed, 1 not measured of 3" in lines[2]
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| goal")]
    assert len(rows) == 3
    cv, share, gpu = rows
    assert cv.startswith("| Pay spread \\| honest (`cv`, issue 10) | <= 0.3 | 0.6 | **missed** by 0.3 (2x the target) |")
    assert "**Missed:** power 2 over ordinals" in cv
    assert "| met |" in share and "never shown" not in share
    assert "| a number | - | not measured |" in gpu and "**Not measured:** no GPU in this run" in gpu
    assert all(line.count(" | ") == 4 for line in rows)  # five cells: the pipe in a goal is escaped
    assert any("Quick run" in line for line in goals_section({}, path, quick=True))
