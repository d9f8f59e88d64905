"""The per-peer guard: an unexpected exception while handling one peer's data is that peer's
`internal_error` verdict, counted, and every other peer's result stands."""

from __future__ import annotations

import pytest

from gauntlet.ratings import PeerState, ValidatorState, WindowOutcome, advance
from gauntlet.verdicts import Blame, Reason, Verdict
from gauntlet.window.context import build_context
from gauntlet.window.fetch import FetchRecord
from gauntlet.window.filter import check_window
from gauntlet.window.guard import guarded
from gauntlet.window.plan import WindowPlan


def test_guarded_returns_the_value_or_a_verdict_naming_only_the_exception_type():
    assert guarded(3, "filter", lambda x: x + 1, 1) == 2
    verdict = guarded(3, "filter", lambda: {}["secret-key-from-peer"])
    assert verdict.reason is Reason.INTERNAL_ERROR and verdict.blame is Blame.VALIDATOR
    assert "KeyError" in verdict.detail and "secret" not in verdict.detail


def test_guard_lets_process_wide_failures_through():
    def boom():
        raise MemoryError
    with pytest.raises(MemoryError):
        guarded(1, "score", boom)


def test_one_peers_unexpected_error_leaves_the_others_alone(tiny_config, tmp_path):
    ctx = build_context(tiny_config)
    theta = ctx.load_theta(tmp_path, 0)
    plan = WindowPlan(window=0, first_block=0, last_block=7, t_min=100.0, t_max=110.0, block_hash="0x0", seed=1,
                      lr=1e-4, peers={1: "a", 2: "b"}, commitments={})
    records = [FetchRecord(1, "k1", 10, 101.5, "h", str(tmp_path / "gone.safetensors"), time_trusted=True),
               FetchRecord(2, "k2", error="missing", detail="no file at k2")]
    checked, copies = check_window(plan, records, ctx.spec, theta, tiny_config)
    assert checked.verdicts[1].reason is Reason.INTERNAL_ERROR  # the archive file vanished: our fault
    assert checked.verdicts[2].reason is Reason.MISSING and not copies and not checked.submissions


def test_an_internal_error_costs_no_score_but_counts_towards_inactivity(tiny_config):
    peer = PeerState(uid=1, mu=30.0, sigma=5.0, moving_average=0.5, final_score=2.0)
    state = ValidatorState(last_window=0, peers={1: peer})
    verdict = Verdict(1, Reason.INTERNAL_ERROR, "internal error in filter (KeyError)")
    after, records = advance(state, WindowOutcome(1, {1: verdict}, {}, {}), tiny_config)
    assert after.peers[1].final_score == 2.0 and after.peers[1].moving_average == 0.5
    assert after.peers[1].inactive_windows == 1 and not records[0].rated_in_match
