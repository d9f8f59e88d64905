"""Issue 5 on a real local network: replays reproduce every recorded value, restarts continue
with the same state, explain names the right reasons, and the CLI's exit statuses."""

from __future__ import annotations

import pytest

from flows.cli import main as gauntlet
from gauntlet.audit.store import AuditStore
from gauntlet.replay import replay_range, replay_window
from gauntlet.state import restore_state

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def network(validated_network):
    """The session's shared network (tests/conftest.py): 8 peers, 5 windows, 0-3 validated."""
    net, state = validated_network
    return net, AuditStore(net.config.audit.root), state


def test_restarted_validator_has_the_same_state(network):
    net, store, in_memory = network
    assert store.windows() == [0, 1, 2, 3]
    restored = restore_state(store)
    assert restored == in_memory  # ratings, B, inactivity, bans and the gather schedule


def test_replay_reproduces_every_recorded_value(network):
    net, store, _ = network
    reports = replay_range(store, 0, 3)
    assert [r.window for r in reports] == [0, 1, 2, 3]
    for report in reports:
        assert report.identical, report.differences
        assert report.compared > 50


def test_replay_cli_exit_statuses(network, tmp_path, capsys):
    net, store, _ = network
    root = str(store.root)
    assert gauntlet(["replay", "--root", root, "--window", "2"]) == 0
    assert "identical" in capsys.readouterr().out
    # a tampered record is reported as a difference
    weights = store.read("weights", window_id=3).to_dicts()
    original = [dict(r) for r in weights]
    weights[0]["weight"] += 0.5
    store.write("weights", 3, [{k: v for k, v in r.items() if k != "window_id"} for r in weights], overwrite=True)
    try:
        assert gauntlet(["replay", "--root", root, "--window", "3", "--details"]) == 1
        out = capsys.readouterr().out
        assert out.startswith("replayed 1 window (3): 0 identical, 1 differ") and "weight: recorded" in out
    finally:
        store.write("weights", 3, [{k: v for k, v in r.items() if k != "window_id"} for r in original], overwrite=True)
    # inputs gone
    assert gauntlet(["replay", "--root", str(tmp_path), "--window", "2"]) == 2


def test_what_if_replay_shows_other_weights(network):
    net, store, _ = network
    report, _ = replay_window(store, 3, overrides=["weights.power=2"])
    assert not report.differences  # a what-if compares nothing; it shows weights
    paid = {u for u, w in report.weights_recorded.items() if w > 0}
    assert paid and report.weights_replayed != report.weights_recorded


def test_explain_names_the_reasons(network, capsys):
    net, store, _ = network
    root = str(store.root)
    for behaviour, words in (("late", "too_late"), ("copycat", "copied"), ("honest", "ok")):
        uid = net.uids(behaviour)[0]
        assert gauntlet(["explain", "--root", root, "--uid", str(uid), "--window", "3"]) == 0
        assert words in capsys.readouterr().out


def test_audit_cli_answers_and_refuses_writes(network, capsys):
    net, store, _ = network
    root = str(store.root)
    assert gauntlet(["audit", "--root", root, "--format", "csv",
                     "SELECT reason, count(*) AS n FROM verdicts GROUP BY reason ORDER BY reason"]) == 0
    out = capsys.readouterr().out
    assert "too_late" in out and "copied" in out
    assert gauntlet(["audit", "--root", root, "DELETE FROM verdicts"]) == 2
    assert "read-only" in capsys.readouterr().err


def test_what_if_under_the_2026_rules_names_the_rules_that_fired(network, capsys):
    net, store, _ = network
    reports = replay_range(store, 0, 3, ["preset=templar-2026"])
    late = net.uids("late")[0]
    fired = [rule for r in reports for rule in r.rules_fired.get(late, ())]
    assert any("missing" in rule for rule in fired), fired  # escalating cuts for the late peer's files
    assert any(r.weights_replayed != r.weights_recorded for r in reports)
    root = str(store.root)
    assert gauntlet(["replay", "--root", root, "--first", "2", "--last", "3", "--preset", "templar-2026"]) == 0
    out = capsys.readouterr().out
    assert "preset=templar-2026" in out and "rules that fired" in out
