"""Issue 13: how a replay reports to a person, on constructed replay results (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gauntlet.replay import ReplayReport
from gauntlet.replay_report import (
    RangeRefused, check_range, mean_weights, network_behaviours, progress_line, pruned, spans, summary,
)


def _report(window: int, recorded: dict[int, float], replayed: dict[int, float] | None = None,
            differences: tuple[str, ...] = (), compared: int = 40) -> ReplayReport:
    return ReplayReport(window, list(differences), dict(recorded), dict(replayed or recorded), compared)


def test_spans() -> None:
    assert spans([8, 0, 1, 2, 5, 7]) == "0-2, 5, 7-8"
    assert spans([3]) == "3" and spans([]) == ""


def test_check_range_returns_the_gaps_and_refuses_what_cannot_be_replayed() -> None:
    recorded = [3, 4, 6, 7]
    assert check_range(3, 7, recorded, "r") == [5]
    assert check_range(6, 6, recorded, "r") == []
    cases = {(0, 9): "windows 0-9 are outside the recorded windows: r holds windows 3-4, 6-7",
             (8, 8): "window 8 is outside the recorded windows: r holds windows 3-4, 6-7",
             (5, 5): "window 5 was never validated: no audit record under r (recorded windows: 3-4, 6-7)",
             (7, 6): "--first 7 is after --last 6"}
    for (first, last), message in cases.items():
        with pytest.raises(RangeRefused) as exc:
            check_range(first, last, recorded, "r")
        assert str(exc.value) == message
    with pytest.raises(RangeRefused, match="no window was ever validated under r"):
        check_range(0, 0, [], "r")


def test_pruned_and_never_validated_are_different_messages() -> None:
    gone = pruned(5, "checkpoint of window 5 is gone: /v/checkpoints/00000005.safetensors")
    assert gone.startswith("window 5 is recorded, but its inputs were pruned (checkpoint of window 5 is gone")
    assert "archived peer files and the checkpoint" in gone and "never validated" not in gone
    assert pruned(None, "x").startswith("the inputs of a recorded window were pruned (x)")


def test_progress_lines() -> None:
    same = _report(5, {1: 0.5, 2: 0.5})
    assert progress_line(same, 3, 7, what_if=False) == "window 5 (3/7): identical"
    bad = _report(6, {1: 1.0}, differences=("uid 1 mu: recorded 1.0, replayed 2.0",) * 4, compared=120)
    assert progress_line(bad, 4, 7, what_if=False) == "window 6 (4/7): 4 of 120 values differ"
    moved = _report(6, {1: 0.5, 2: 0.5, 3: 0.0}, {1: 0.7, 2: 0.3, 3: 0.0})
    assert progress_line(moved, 1, 1, what_if=True) == "window 6 (1/1): weights of 2 uid(s) move"
    assert progress_line(same, 1, 1, what_if=True) == "window 5 (1/1): weights unchanged"


def test_summary_of_an_identical_replay() -> None:
    reports = [_report(w, {1: 0.6, 2: 0.4}) for w in (3, 4, 6)]
    text = summary(reports, never_validated=[5])
    assert text.splitlines() == [
        "replayed 3 windows (3-4, 6): all 3 identical; 120 recorded values compared, none differ",
        "never validated, skipped: 5",
        "weights: unchanged for all 2 uids",
    ]


def test_summary_of_differences_puts_the_answer_first() -> None:
    reports = [_report(3, {1: 0.6, 2: 0.4}),
               _report(4, {1: 0.6, 2: 0.4}, {1: 0.5, 2: 0.5}, ("uid 1 weight: ...", "uid 2 weight: ..."))]
    lines = summary(reports).splitlines()
    assert lines[0] == ("replayed 2 windows (3-4): 1 identical, 1 differ; "
                        "2 of 80 recorded values differ (window 4: 2)")
    assert lines[1] == "weight moved per uid (mean over the windows, recorded -> replayed):"
    assert lines[2:4] == ["  uid    1  0.6000 -> 0.5500  (-0.0500)", "  uid    2  0.4000 -> 0.4500  (+0.0500)"]
    assert lines[-1] == "--details shows every differing value"
    assert "uid 1 weight: ..." not in "\n".join(lines)  # the details wait for --details


def test_what_if_summary_labels_uids_with_their_behaviour() -> None:
    reports = [_report(w, {1: 0.5, 2: 0.5, 3: 0.0, 4: 0.0}, {1: 0.5, 2: 0.3, 3: 0.2, 4: 0.0}) for w in (8, 9)]
    behaviours = {1: "honest", 2: "honest", 3: "copycat", 4: "late"}
    lines = summary(reports, ["rating.beta=20"], behaviours).splitlines()
    assert lines[0] == "replayed 2 windows (8-9) with rating.beta=20: a what-if, nothing is compared"
    assert lines[2] == "  uid    2 honest   0.5000 -> 0.3000  (-0.2000)"
    assert lines[3] == "  uid    3 copycat  0.0000 -> 0.2000  (+0.2000)"
    assert lines[4:] == ["  the other 2 uids: unchanged", "--details shows each window's weights"]


def test_mean_weights_count_an_absent_uid_as_zero() -> None:
    reports = [_report(1, {1: 1.0}), _report(2, {2: 1.0}, {1: 0.5, 2: 0.5})]
    assert mean_weights(reports) == {1: (0.5, 0.75), 2: (0.5, 0.25)}


def test_behaviours_come_from_the_network_manifest_only(tmp_path: Path) -> None:
    manifest = {"peers": [{"uid": 1, "hotkey": "peer-000", "behaviour": "honest"},
                          {"uid": 2, "hotkey": "peer-001", "behaviour": "sybil"}],
                "validator": {"uid": 0, "hotkey": "validator", "behaviour": "validator"}, "seed": 0}
    (tmp_path / "audit").mkdir()
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert network_behaviours(tmp_path / "audit") == {0: "validator", 1: "honest", 2: "sybil"}
    (tmp_path / "other").mkdir()
    assert network_behaviours(tmp_path / "other") == {}  # not the network's audit folder
    (tmp_path / "manifest.json").write_text("{not json")
    assert network_behaviours(tmp_path / "audit") == {}
