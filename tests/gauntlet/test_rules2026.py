"""The templar-2026 rules: each on a constructed window, firing and not firing; trackers through rows."""

from __future__ import annotations

import math

import pytest

from gauntlet.audit.store import AuditStore
from gauntlet.config import ConfigError, load_config, with_overrides
from gauntlet.filter import sync_score, sync_verdict
from gauntlet.ratings import PeerScore, PeerState, ValidatorState, WindowOutcome, advance
from gauntlet.rules.penalties import gather_success_rate, skip_negative_penalties
from gauntlet.rules.sync import SyncEma, interquartile_mean, steps_behind_iqm, update_sync_ema
from gauntlet.rules.tracker import RuleTracker
from gauntlet.verdicts import Reason, Verdict
from gauntlet.weights import choose_gather, compute_weights, gather_exclusions, ramp_weights

T26 = load_config(preset="templar-2026")
PAPER = load_config(preset="paper")
T, F = True, False


def _peer(uid: int, **kw) -> PeerState:
    return PeerState(uid=uid, mu=kw.pop("mu", 30.0), sigma=kw.pop("sigma", 2.0), **kw)


def _missing(window: int, state: ValidatorState, uid: int = 7, cfg=T26, **kw):
    new, records = advance(state, WindowOutcome(window, {uid: Verdict(uid, Reason.MISSING)}, {}, {}, **kw), cfg)
    return new, {r.state.uid: r for r in records}


# --- missing files: in the match, escalating cuts, gather success, naughty list ---------------

def test_missing_file_enters_the_match_last_only_with_the_rule():
    peers = {u: _peer(u, final_score=1.0, moving_average=0.5) for u in (1, 2, 3)}
    verdicts = {1: Verdict.accept(1), 2: Verdict.accept(2), 3: Verdict(3, Reason.MISSING)}
    scores = {1: PeerScore(0.02, 0.03, 1), 2: PeerScore(0.01, 0.02, 1)}
    outcome = WindowOutcome(3, verdicts, scores, {1: 1.0, 2: 1.0})
    on, rec_on = advance(ValidatorState(peers=peers), outcome, T26)
    off, rec_off = advance(ValidatorState(peers=peers), outcome, PAPER)
    assert [r.rated_in_match for r in rec_on] == [True, True, True]
    assert on.peers[3].mu < peers[3].mu  # ranked below both (-99)
    assert [r.rated_in_match for r in rec_off] == [True, True, False]
    assert off.peers[3].mu == peers[3].mu


@pytest.mark.parametrize(("streak", "factor", "phrase"), [
    (0, 0.75, "cut x0.75: first missing file in a row"),
    (1, 0.5, "cut x0.5: second missing file in a row"),
    (2, 0.0, "cut x0: third missing file in a row"),
    (5, 0.0, "cut x0: 6th missing file in a row"),
])
def test_missing_cuts_escalate_with_the_streak(streak, factor, phrase):
    tracker = RuleTracker(miss_history=(F,) * 3 + (T,) * min(streak, 3), consecutive_misses=streak)
    state = ValidatorState(peers={7: _peer(7, final_score=1.0, moving_average=0.5, tracker=tracker)})
    new, rec = _missing(5, state)
    assert new.peers[7].final_score == pytest.approx(factor)
    assert new.peers[7].moving_average == pytest.approx(0.5 * factor)
    assert new.peers[7].tracker.consecutive_misses == streak + 1
    assert rec[7].rules_fired == (phrase,)


def test_a_file_that_arrives_ends_the_streak_and_the_paper_cut_stays_flat():
    tracker = RuleTracker(miss_history=(T, T), consecutive_misses=2)
    state = ValidatorState(peers={7: _peer(7, final_score=1.0, tracker=tracker)})
    new, records = advance(state, WindowOutcome(5, {7: Verdict.accept(7)}, {}, {}), T26)
    assert new.peers[7].tracker == RuleTracker(miss_history=(T, T, F), consecutive_misses=0)
    assert records[0].rules_fired == ()
    paper, rec = _missing(5, state, cfg=PAPER)
    assert paper.peers[7].final_score == pytest.approx(0.75) and rec[7].rules_fired == ()
    assert paper.peers[7].tracker == tracker  # rules off: trackers untouched


def test_low_gather_success_cuts_every_missing_peer_to_zero():
    peers = {u: _peer(u, final_score=1.0, moving_average=0.5) for u in (1, 2, 3)}
    state = ValidatorState(peers=peers, gather_schedule=((0, (1, 2, 3)),))
    verdicts = {1: Verdict.accept(1), 2: Verdict(2, Reason.MISSING), 3: Verdict(3, Reason.TOO_LATE)}
    assert gather_success_rate((1, 2, 3), verdicts) == pytest.approx(1 / 3)
    new, records = advance(state, WindowOutcome(5, verdicts, {}, {}), T26)
    assert new.peers[2].final_score == 0.0 and new.peers[3].final_score == 0.0
    assert records[1].rules_fired[0].startswith("cut x0: missing file while the window's gather success was 33%")
    fine, _ = _missing(5, ValidatorState(peers=peers), uid=2, gather_success=0.5)
    assert fine.peers[2].final_score == pytest.approx(0.75)


def test_missing_half_of_the_last_eight_windows_bars_the_peer_and_resets_a_positive_score():
    tracker = RuleTracker(miss_history=(T, F, T, F, T, F, F), consecutive_misses=0)  # + this miss: 4 of 8
    state = ValidatorState(peers={7: _peer(7, final_score=1.0, moving_average=0.5, tracker=tracker)})
    new, rec = _missing(30, state)
    assert new.peers[7].banned_until == 30 + 1 + 20
    assert (new.peers[7].mu, new.peers[7].final_score, new.peers[7].tracker) == (25.0, 0.0, RuleTracker())
    assert rec[7].rules_fired == ("naughty list for 20 windows: missing in 4 of the last 8 windows: positive score reset",)
    calm = replace_history(tracker, (F, F, T, F, T, F, F))  # + this miss: 3 of 8
    new, rec = _missing(30, ValidatorState(peers={7: _peer(7, final_score=1.0, tracker=calm)}))
    assert new.peers[7].banned_until is None and rec[7].rules_fired == ("cut x0.75: first missing file in a row",)


def test_a_short_history_never_reaches_the_naughty_list():
    tracker = RuleTracker(miss_history=(T,) * 6, consecutive_misses=6)  # 7 of 7, but not yet 8 windows
    new, _ = _missing(30, ValidatorState(peers={7: _peer(7, final_score=1.0, tracker=tracker)}))
    assert new.peers[7].banned_until is None and new.peers[7].final_score == 0.0


def test_a_barred_peer_is_reset_every_window_until_the_bar_ends():
    state = ValidatorState(peers={7: _peer(7, final_score=0.0, banned_until=40, tracker=RuleTracker((T,), 1))})
    new, records = advance(state, WindowOutcome(35, {7: Verdict(7, Reason.BANNED)}, {}, {}), T26)
    assert new.peers[7] == PeerState(uid=7, mu=25.0, sigma=25 / 3, banned_until=40)
    assert records[0].rules_fired == ("barred until window 40: rating and histories reset",)
    after, records = advance(state, WindowOutcome(40, {7: Verdict.accept(7)}, {}, {}), T26)
    assert after.peers[7].mu == 30.0 and records[0].rules_fired == ()


def test_copy_ban_lasts_twenty_windows():
    new, _ = advance(ValidatorState(peers={7: _peer(7)}),
                     WindowOutcome(50, {7: Verdict(7, Reason.COPIED)}, {}, {}, {7: "ban"}), T26)
    assert new.peers[7].banned_until == 70


def replace_history(tracker: RuleTracker, history: tuple[bool, ...]) -> RuleTracker:
    return RuleTracker(history, tracker.consecutive_misses, tracker.negative_history, tracker.consecutive_negatives)


# --- negative evaluations: the x0.25 cut, the bad-window guard, the gather exclusion -------------

def _evaluated(window: int, history: tuple[bool, ...], scores: dict[int, float], streak: int = 0, cfg=T26,
               extra: dict[int, PeerState] | None = None):
    peers = {u: _peer(u, moving_average=0.5) for u in scores}
    peers[7] = _peer(7, moving_average=0.5, tracker=RuleTracker(negative_history=history, consecutive_negatives=streak))
    peers.update(extra or {})
    outcome = WindowOutcome(window, {u: Verdict.accept(u) for u in scores},
                            {u: PeerScore(s, 1.0, 1) for u, s in scores.items()}, {u: 1.0 for u in scores})
    new, records = advance(ValidatorState(peers=peers), outcome, cfg)
    return new, {r.state.uid: r for r in records}


GOOD = {1: 0.05, 2: 0.04, 3: 0.03, 4: 0.02, 5: 0.01}


def test_more_than_half_negative_in_the_last_eight_cuts_score_and_average():
    history = (T, T, F, T, F, T, F)  # + this negative evaluation: 5 of 8
    on, rec = _evaluated(5, history, {**GOOD, 7: -0.01})
    off, _ = _evaluated(5, history, {**GOOD, 7: -0.01}, cfg=with_overrides(T26, ["rules.negative_cut=false"]))
    assert off.peers[7].final_score > 0
    assert on.peers[7].final_score == pytest.approx(off.peers[7].final_score * 0.25)
    assert on.peers[7].moving_average == pytest.approx(off.peers[7].moving_average * 0.25)
    assert rec[7].rules_fired == ("cut x0.25: 5 of the last 8 evaluations negative",)
    half, rec = _evaluated(5, (F, T, F, T, F, T, F), {**GOOD, 7: -0.01})  # 4 of 8: not more than half
    assert half.peers[7].final_score == pytest.approx(off.peers[7].final_score) and rec[7].rules_fired == ()


def test_no_negative_cut_in_a_window_whose_fifth_ranked_score_is_negative():
    bad = {1: 0.05, 2: 0.04, 3: 0.03, 4: 0.02, 5: -0.01, 7: -0.02}
    assert skip_negative_penalties(bad, T26.rules) and not skip_negative_penalties(GOOD, T26.rules)
    assert skip_negative_penalties({1: 0.1, 2: -0.1}, T26.rules)  # fewer than 5: the lowest decides
    new, rec = _evaluated(5, (T, T, F, T, F, T, F), bad)
    off, _ = _evaluated(5, (T, T, F, T, F, T, F), bad, cfg=with_overrides(T26, ["rules.negative_cut=false"]))
    assert new.peers[7].final_score == pytest.approx(off.peers[7].final_score)
    assert rec[7].rules_fired == ("not applied (cut x0.25: 5 of the last 8 evaluations negative): "
                                  "the window's rank-5 score is negative",)


def test_the_cut_compounds_on_a_peer_not_evaluated_again():
    idle = _peer(8, final_score=1.0, moving_average=0.5, tracker=RuleTracker(negative_history=(T,) * 8))
    new, rec = _evaluated(5, (), GOOD, extra={8: idle})
    assert new.peers[8].final_score == pytest.approx(0.25) and rec[8].rules_fired
    again, _ = advance(new, WindowOutcome(6, {}, {}, {}), T26)
    assert again.peers[8].final_score == pytest.approx(0.0625)


def test_three_negative_evaluations_in_a_row_exclude_from_gather_until_a_positive():
    new, rec = _evaluated(5, (T, T), {**GOOD, 7: -0.01}, streak=2)
    assert new.peers[7].tracker.consecutive_negatives == 3
    assert rec[7].rules_fired == ("excluded from gather: 3 negative evaluations in a row",)
    assert gather_exclusions(new.peers, T26.rules) == {7}
    weights = {u: 0.1 for u in new.peers}
    assert 7 not in choose_gather(weights, new.peers, set(new.peers), T26.aggregation, gather_exclusions(new.peers, T26.rules))
    assert 7 in choose_gather(weights, new.peers, set(new.peers), T26.aggregation)
    two, rec = _evaluated(5, (T,), {**GOOD, 7: -0.01}, streak=1)
    assert gather_exclusions(two.peers, T26.rules) == set() and rec[7].rules_fired == ()
    back, rec = _evaluated(5, (T, T, T), {**GOOD, 7: 0.01}, streak=3)
    assert gather_exclusions(back.peers, T26.rules) == set()
    assert rec[7].rules_fired == ("back in the gather set: positive evaluation",)


# --- uniqueness floor ------------------------------------------------------------------------

@pytest.mark.parametrize(("window", "average", "zeroed"), [(10, 0.08, True), (9, 0.08, False), (10, 0.12, False)])
def test_moving_average_under_the_floor_after_ten_windows_zeroes_the_score(window, average, zeroed):
    peers = {u: _peer(u, moving_average=(average - 0.05) / 0.95) for u in (1, 2)}  # B after: `average`
    outcome = WindowOutcome(window, {u: Verdict.accept(u) for u in (1, 2)},
                            {1: PeerScore(0.02, 1.0, 1), 2: PeerScore(0.01, 1.0, 1)}, {1: 1.0, 2: 1.0})
    new, records = advance(ValidatorState(peers=peers), outcome, T26)
    assert new.peers[1].moving_average == pytest.approx(average)
    assert (new.peers[1].final_score == 0.0) == zeroed
    assert bool(records[0].rules_fired) == zeroed


# --- sync: IQM of |delta theta| over the EMA of each probed element's change -----------------

def test_interquartile_mean_matches_torch_quantiles():
    assert interquartile_mean([1, 2, 3, 4, 5, 6, 7, 100]) == pytest.approx(4.5)  # q1 2.75, q3 6.25
    assert interquartile_mean([3.0]) == 3.0
    with pytest.raises(ValueError, match="no values"):
        interquartile_mean([])


def test_steps_behind_divides_by_each_elements_ema_and_falls_back_to_lr():
    ema = SyncEma()
    ema = update_sync_ema(ema, {"a": [1.0, 1.0]}, 0.2)  # seeds `previous` only
    ema = update_sync_ema(ema, {"a": [1.1, 0.8]}, 0.2)  # first change: |0.1|, |0.2|
    ema = update_sync_ema(ema, {"a": [1.2, 0.8]}, 0.2)  # 0.8 * avg + 0.2 * |delta|
    assert ema.average["a"] == pytest.approx((0.1, 0.16))
    x = steps_behind_iqm({"a": [1.2, 0.8], "b": [5.0, 5.0]}, {"a": [1.0, 0.48], "b": [5.02, 5.0]}, ema, lr=0.01)
    # ratios: 0.2/0.1 = 2, 0.32/0.16 = 2, b (no EMA, lr): 2, 0 -> IQM over [0, 2, 2, 2] = 2
    assert x == pytest.approx(2.0)
    assert sync_score(x, T26.filter.sync_cap_steps, T26.filter.sync_exponent) == pytest.approx((1 - 2 / 3) ** 2.5)
    assert sync_verdict(1, x, T26.filter.sync_max_steps).ok
    assert not sync_verdict(1, 2.01, T26.filter.sync_max_steps).ok
    assert steps_behind_iqm({"a": [1.0]}, {"z": [1.0]}, ema, lr=0.01) == math.inf
    assert SyncEma.from_json(ema.to_json()) == ema


# --- weights: the ramp of the top gather peers, the decaying tail, the burn ------------------

def test_ramp_weights_by_hand():
    cfg = T26.rules.model_copy(update={"reserve_count": 2, "burn_share": 0.5, "burn_uid": 99})
    finals = {1: 5.0, 2: 4.0, 3: 3.0, 4: 2.0, 5: 1.0, 6: 0.0, 7: -1.0}
    w = ramp_weights(finals, 3, cfg)
    # gather ramp 2, 1.5, 1 of 0.375; reserve 1, 0.5 of 0.125 (under the last gather weight, no cap)
    gather = [0.375 * r / 4.5 for r in (2.0, 1.5, 1.0)]
    reserve = [0.125 * r / 1.5 for r in (1.0, 0.5)]
    paid = sum(gather) + sum(reserve)
    expected = [v * 0.5 / paid for v in gather + reserve]
    assert [w[u] for u in (1, 2, 3, 4, 5)] == pytest.approx(expected)
    assert (w[6], w[7], w[99]) == (0.0, 0.0, 0.5) and sum(w.values()) == pytest.approx(1.0)
    assert ramp_weights({1: -1.0}, 3, cfg) == {1: 0.0, 99: 1.0}
    assert ramp_weights({1: -1.0}, 3, T26.rules) == {1: 0.0}


def test_reserve_is_capped_under_the_smallest_gather_weight():
    cfg = T26.rules.model_copy(update={"reserve_count": 1, "gather_share": 0.5})
    w = ramp_weights({1: 3.0, 2: 2.0, 3: 1.0}, 2, cfg)
    # before the cap: gather 1/3, 1/6 of 0.5 share; reserve 0.5 > 1/6 -> x (1/6)/0.5 * 0.5 = 1/12
    raw = {1: 1 / 3, 2: 1 / 6, 3: 1 / 12}
    assert w == pytest.approx({u: v / sum(raw.values()) for u, v in raw.items()})
    assert compute_weights({1: 3.0, 2: 1.0}, PAPER) == pytest.approx({1: 0.9, 2: 0.1})


# --- trackers survive a restart through the audit rows -----------------------------------------

def _script(window: int) -> WindowOutcome:
    """Peer 7 misses every other window and scores negative; 8 never shows up; the rest are honest."""
    verdicts = {u: Verdict.accept(u) for u in range(1, 7)}
    verdicts[7] = Verdict(7, Reason.MISSING) if window % 2 else Verdict.accept(7)
    verdicts[8] = Verdict(8, Reason.MISSING)
    scores = {u: PeerScore(0.01 * u + 0.001 * window, 0.02, 1 if u % 3 else -1) for u in range(1, 7)}
    if not window % 2:
        scores[7] = PeerScore(-0.01, 0.0, -1)
    return WindowOutcome(window, verdicts, scores, {u: 1.0 for u in scores})


def test_trackers_round_trip_through_the_ratings_table_and_a_restart_changes_nothing(tmp_path):
    store = AuditStore(tmp_path)
    state, straight = ValidatorState(), ValidatorState()
    for w in range(14):
        straight, _ = advance(straight, _script(w), T26)
    for w in range(14):
        state, records = advance(state, _script(w), T26)
        store.write("ratings", w, [r.row(w) for r in records])
        if w == 8:  # restart: everything rebuilt from the table just written
            rows = store.read("ratings", window_id=w).iter_rows(named=True)
            state = ValidatorState(last_window=w, peers={int(r["uid"]): PeerState.from_row(r) for r in rows})
    assert state.peers == straight.peers
    assert straight.peers[1].tracker == RuleTracker((F,) * 8, 0, (F,) * 8, 0)
    assert straight.peers[7].banned_until == straight.peers[8].banned_until == 7 + 1 + 20
    fired = {w: store.read("ratings", window_id=w).filter(uid=7)["rules_fired"].to_list()[0] for w in (5, 7, 9)}
    assert fired[5] == ["cut x0.75: first missing file in a row",
                        "excluded from gather: 3 negative evaluations in a row"]  # windows 0, 2, 4
    assert fired[7] == ["naughty list for 20 windows: missing in 4 of the last 8 windows",  # F was 0: no reset
                        "excluded from gather: 4 negative evaluations in a row"]
    assert fired[9] == ["barred until window 28: rating and histories reset"]


def test_rows_written_before_the_rules_existed_give_empty_trackers():
    row = {"uid": 3, "mu": 25.0, "sigma": 8.0, "moving_average": 0.1, "final_score": 0.0}
    assert PeerState.from_row(row).tracker == RuleTracker()
    with pytest.raises(ValueError, match="list of booleans"):
        RuleTracker.from_row({"miss_history": [1, 0]})


def test_all_rules_are_off_outside_the_templar_preset():
    for preset in ("paper", "default"):
        rules = load_config(preset=preset).rules
        assert not any(v for k, v in rules.model_dump().items() if isinstance(v, bool))
        assert rules.weight_scheme == "power" and rules.zero_below == 0.0 and rules.burn_share == 0.0


def test_a_cut_outside_zero_to_one_is_refused_with_its_field():
    with pytest.raises(ConfigError, match="rules.missing_cuts"):
        load_config(preset="templar-2026", overrides=["rules.missing_cuts=[0.5, 2.0]"])
