"""The demo's progress display: the stage order, the status line, and what a pipe receives."""

from __future__ import annotations

import io
from collections import Counter

import pytest

from gauntlet.progress import Progress, next_stage
from gauntlet.window.pipeline import STAGES


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_next_stage_follows_the_pipeline_and_folds_baseline_into_evaluate() -> None:
    assert next_stage("restore") == "plan"
    assert next_stage("filter") == "evaluate" and next_stage("baseline") == "evaluate"
    assert next_stage("evaluate") == "rate"
    assert next_stage(list(STAGES)[-1]) is None
    assert next_stage("report") is None


def test_a_pipe_gets_one_line_per_validated_window_with_running_totals() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress(3, stream=out, live=False, clock=clock)
    progress.set_stage("validator: fetch", 7)
    assert out.getvalue() == ""  # stage changes are for terminals only
    clock.now += 12
    progress.validated(7, 16, Counter({"copied": 2, "too_late": 1}))
    progress.validated(8, 15, {"copied": 1})
    lines = out.getvalue().splitlines()
    assert lines[0] == "[   12 s] validated window 1 of 3 (#7): 16 peers scored; rejected: copied 2, too_late 1"
    assert lines[1].endswith("validated window 2 of 3 (#8): 15 peers scored; rejected: copied 1")
    assert progress.line() == "[   12 s] window 3 of 3 (#8): validator: fetch; 31 peers scored, 4 rejections so far"


def test_a_terminal_gets_one_status_line_rewritten_in_place() -> None:
    out = io.StringIO()
    progress = Progress(2, stream=out, live=True, clock=Clock())
    progress.set_stage("miners")
    progress.set_stage("validator: evaluate", 3)
    assert "\n" not in out.getvalue() and out.getvalue().count("\r") == 2
    assert out.getvalue().endswith("window 1 of 2 (#3): validator: evaluate; 0 peers scored, 0 rejections so far")
    progress.note("kept the previous network as data/localnet-20261130-1612")
    assert "\rkept the previous network as data/localnet-20261130-1612" in out.getvalue()
    progress.close()
    assert out.getvalue().endswith("\r")


def test_a_run_needs_a_window() -> None:
    with pytest.raises(ValueError, match="at least one window"):
        Progress(0)
