"""Ratings, final scores and penalties: a window computed by hand, and each penalty rule."""

from __future__ import annotations


import pytest

from gauntlet.config import load_config
from gauntlet.ratings import PeerScore, PeerState, ValidatorState, WindowOutcome, advance, smoothed_score, window_score
from gauntlet.verdicts import Reason, Verdict
from gauntlet.weights import choose_gather, power_normalise, schedule_gather
from tests.gauntlet.test_match import _plackett_luce_by_hand

CFG = load_config(preset="paper")


def test_hand_computed_window():
    """Five peers, first window: three rated, one missing, one validator fault."""
    verdicts = {u: Verdict.accept(u) for u in (1, 2, 3)}
    verdicts[4] = Verdict(4, Reason.MISSING, "no file")
    verdicts[5] = Verdict(5, Reason.VALIDATOR_FAULT, "own data failed to load")
    scores = {1: PeerScore(0.03, 0.05, +1), 2: PeerScore(0.01, 0.02, +1), 3: PeerScore(0.02, 0.01, -1)}
    outcome = WindowOutcome(0, verdicts, scores, sync_scores={1: 1.0, 2: 1.0, 3: 0.5})
    state, records = advance(ValidatorState(), outcome, CFG)
    by_hand = _plackett_luce_by_hand([25.0] * 3, [25 / 3] * 3, beta=7.0, tau=0.1)
    ordinal = {1: by_hand[0][0] - 3 * by_hand[0][1], 3: by_hand[1][0] - 3 * by_hand[1][1],
               2: by_hand[2][0] - 3 * by_hand[2][1]}
    # B = 0.95 * 0 + 0.05 * b; F = ordinal * max(0, B) * sync
    assert state.peers[1].moving_average == pytest.approx(0.05)
    assert state.peers[3].moving_average == pytest.approx(-0.05)
    assert state.peers[1].final_score == pytest.approx(ordinal[1] * 0.05 * 1.0)
    assert ordinal[1] > 0 and ordinal[2] < 0
    assert state.peers[2].final_score == pytest.approx(ordinal[2] * 0.05)  # negative: no weight
    assert state.peers[3].final_score == 0.0  # B < 0: no own-data advantage, no score
    assert state.peers[4].final_score == 0.0 and state.peers[4].inactive_windows == 1
    assert state.peers[5] == PeerState.new(5, CFG.rating)  # the validator's fault costs nothing
    weights = power_normalise({u: p.final_score for u, p in state.peers.items()}, CFG.weights)
    assert weights == {1: 1.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0}
    assert [r.rated_in_match for r in records] == [True, True, True, False, False]


def test_window_score_scales_or_gates_by_b():
    assert window_score(4.0, 0.2, 0.5) == pytest.approx(0.4)  # paper: ordinal x B x sync
    assert window_score(4.0, 0.2, 0.5, "gate") == pytest.approx(2.0)  # ours: B > 0 opens the gate
    assert window_score(4.0, 0.0, 0.5, "gate") == 0.0
    assert window_score(-4.0, 0.2, 1.0, "gate") == -4.0  # a negative ordinal stays negative: no weight
    with pytest.raises(ValueError, match="own_data"):
        window_score(1.0, 1.0, 1.0, "both")


def test_smoothed_score_golden():
    assert smoothed_score(2.0, 1.0, 0.0) == 1.0  # paper: this window's score alone
    assert smoothed_score(2.0, 1.0, 0.3) == pytest.approx(0.3 * 2.0 + 0.7 * 1.0)
    f = 0.0
    for now in (1.0, 1.0, 0.0):  # by hand: 0.7, 0.91, then 0.273 (one window at 0 does not zero it)
        f = smoothed_score(f, now, 0.3)
    assert f == pytest.approx(0.3 * (0.3 * 0.7 + 0.7))
    with pytest.raises(ValueError, match="score_ema"):
        smoothed_score(0.0, 1.0, 1.0)


def test_gated_smoothed_window_by_hand():
    """Two windows under own_data = gate, score_ema = 0.5: the window score, then F, by hand; a
    peer whose B turns negative keeps half its F (paid less, not zeroed) but its window score is 0."""
    from gauntlet.config import with_overrides

    cfg = with_overrides(CFG, ["weights.own_data=gate", "weights.score_ema=0.5"])
    verdicts = {u: Verdict.accept(u) for u in (1, 2)}
    first = WindowOutcome(0, verdicts, {1: PeerScore(0.03, 0.05, +1), 2: PeerScore(0.01, 0.02, +1)},
                          sync_scores={1: 1.0, 2: 1.0})
    state, records = advance(ValidatorState(), first, cfg)
    for r in records:
        assert r.window_score == pytest.approx(r.state.ordinal)  # B = 0.05 > 0: the gate is open
        assert r.state.final_score == pytest.approx(0.5 * r.state.ordinal)  # 0.5 x 0 + 0.5 x score
    f1 = state.peers[1].final_score
    second = WindowOutcome(1, verdicts, {1: PeerScore(0.03, 0.01, -1), 2: PeerScore(0.01, 0.02, +1)},
                           sync_scores={1: 1.0, 2: 1.0})
    state, records = advance(state, second, cfg)
    assert state.peers[1].moving_average < 0 and records[0].window_score == 0.0
    assert state.peers[1].final_score == pytest.approx(0.5 * f1)


def _with(uid: int, **kw) -> ValidatorState:
    return ValidatorState(peers={uid: PeerState(uid=uid, mu=30.0, sigma=2.0, **kw)})


@pytest.mark.parametrize(
    ("reason", "action", "final", "avg"),
    [
        (Reason.MISSING, None, 0.75, 0.375),
        (Reason.TOO_LATE, None, 0.75, 0.375),
        (Reason.DESYNCED, None, 0.75, 0.375),
        (Reason.MALFORMED, None, 0.0, 0.375),
        (Reason.NON_FINITE, None, 0.0, 0.375),
        (Reason.COPIED, "reset", 0.0, 0.5),
        (Reason.OK, "halve", 0.5, 0.5),
        (Reason.INFRASTRUCTURE, None, 1.0, 0.5),
        (Reason.VALIDATOR_FAULT, None, 1.0, 0.5),
    ],
)
def test_penalties_multiply_positive_scores(reason, action, final, avg):
    state = _with(7, final_score=1.0, moving_average=0.5)
    outcome = WindowOutcome(10, {7: Verdict(7, reason)}, {}, {}, {7: action} if action else {})
    new, records = advance(state, outcome, CFG)
    assert new.peers[7].final_score == pytest.approx(final)
    assert new.peers[7].moving_average == pytest.approx(avg)
    assert bool(records[0].penalties) == (final != 1.0 or avg != 0.5)


def test_negative_scores_are_not_raised_by_penalties():
    state = _with(7, final_score=-2.0, moving_average=-0.5)
    new, _ = advance(state, WindowOutcome(3, {7: Verdict(7, Reason.MISSING)}, {}, {}), CFG)
    assert new.peers[7].final_score == -2.0 and new.peers[7].moving_average == -0.5


def test_ban_bars_the_copier_for_ban_windows():
    state = _with(7, final_score=1.0)
    new, records = advance(state, WindowOutcome(40, {7: Verdict(7, Reason.COPIED)}, {}, {}, {7: "ban"}), CFG)
    assert new.peers[7].banned_until == 40 + CFG.uniqueness.ban_windows
    assert new.peers[7].final_score == 0.0
    assert any("barred" in p for p in records[0].penalties)


def test_inactive_peer_is_reset_after_reset_after_windows():
    state = _with(7, final_score=1.0, moving_average=0.5, inactive_windows=CFG.penalty.reset_after - 1)
    new, records = advance(state, WindowOutcome(99, {7: Verdict(7, Reason.MISSING)}, {}, {}), CFG)
    assert new.peers[7] == PeerState.new(7, CFG.rating)
    assert "rating deleted" in records[0].penalties[-1]


def test_activity_clears_the_inactivity_count():
    state = _with(7, inactive_windows=3)
    new, _ = advance(state, WindowOutcome(5, {7: Verdict.accept(7)}, {}, {}), CFG)
    assert new.peers[7].inactive_windows == 0


def test_power_normalisation():
    w = power_normalise({1: 3.0, 2: 1.0, 3: -1.0, 4: 0.0}, CFG.weights)
    assert w == pytest.approx({1: 0.9, 2: 0.1, 3: 0.0, 4: 0.0})
    assert power_normalise({1: 1e-5}, CFG.weights) == {1: 0.0}  # 1e-10 <= 1e-8: all zero


def test_gather_is_top_by_weight_topped_up_by_rating():
    cfg = CFG.aggregation.model_copy(update={"gather_size": 2, "min_peers": 3})
    peers = {u: PeerState(uid=u, mu=20.0 + u, sigma=1.0) for u in range(1, 6)}
    weights = {1: 0.6, 2: 0.4, 3: 0.0, 4: 0.0, 5: 0.0}
    assert choose_gather(weights, peers, eligible={3, 4}, cfg=cfg) == (1, 2, 4)


def test_gather_schedule_takes_effect_later():
    cfg = CFG.aggregation.model_copy(update={"refresh_every": 5, "effective_after": 2})
    state = schedule_gather(ValidatorState(), 10, (1, 2), CFG.chain, cfg)
    assert state.gather_for(13) is None and state.gather_for(14) == (1, 2)
    assert schedule_gather(state, 11, (3,), CFG.chain, cfg) is state  # not a refresh window
    later = schedule_gather(state, 15, (3,), CFG.chain, cfg)
    assert later.gather_for(18) == (1, 2) and later.gather_for(19) == (3,)


ANCHORED = load_config(preset="paper", overrides={"rating": {"anchor": 0.6}})


def _equal_work(cfg, windows: int = 12, extra: dict[int, float] | None = None):
    """Seven peers doing equal work (scores within 10% of 1e-3, each peer's data a little harder
    or easier than the next, as real pages are; every own-data test +1) and `extra` peers scoring
    a fixed fraction of it; the state after `windows` windows."""
    import random
    rng, state = random.Random(5), ValidatorState()
    for w in range(windows):
        scores = {u: PeerScore(1e-3 * (1 + 0.03 * (u - 4)) * rng.uniform(0.95, 1.05), 2e-3, +1) for u in range(1, 8)}
        scores |= {u: PeerScore(1e-3 * f, 1e-3, +1) for u, f in (extra or {}).items()}
        outcome = WindowOutcome(w, {u: Verdict.accept(u) for u in scores}, scores, {u: 1.0 for u in scores})
        state, _ = advance(state, outcome, cfg)
    return state


def test_without_the_anchor_equal_work_is_paid_to_about_half():
    state = _equal_work(CFG)
    assert state.anchor is None and state.anchor_ordinal(CFG.rating) == 0.0  # off: the paper's F
    unpaid = [u for u in range(1, 8) if state.peers[u].final_score <= 0]
    assert 2 <= len(unpaid) <= 5  # the ordinal is relative: chance decides who is above the prior


def test_the_anchor_pays_every_equal_worker_and_ranks_a_weak_update_below_it():
    state = _equal_work(ANCHORED, extra={8: 0.3, 9: -1.0})
    offset = state.anchor_ordinal(ANCHORED.rating)
    assert state.anchor is not None and offset < 0  # beaten by most peers, it drifted down
    for uid in range(1, 8):
        peer = state.peers[uid]
        assert peer.final_score == pytest.approx((peer.ordinal - offset) * peer.moving_average)
        assert peer.final_score > 0
    assert state.peers[8].final_score <= 0 and state.peers[9].final_score <= 0  # 0.3x and harm: below


def test_the_anchor_plays_only_where_a_match_is_played_and_never_moves_the_paper():
    one = {1: PeerScore(2e-3, 3e-3, +1)}
    state, _ = advance(ValidatorState(), WindowOutcome(0, {1: Verdict.accept(1)}, one, {1: 1.0}), ANCHORED)
    assert state.anchor is None and state.peers[1].mu == ANCHORED.rating.mu  # no match, no anchor
    assert state.anchor_ordinal(ANCHORED.rating) == pytest.approx(0.0, abs=1e-12)  # the prior's ordinal
    two = one | {2: PeerScore(3e-3, 4e-3, +1)}
    state, _ = advance(state, WindowOutcome(1, {u: Verdict.accept(u) for u in two}, two, {1: 1.0, 2: 1.0}), ANCHORED)
    assert state.anchor is not None and state.anchor[0] < ANCHORED.rating.mu  # 0.6 x median 2.5e-3: last
    paper = _equal_work(CFG, windows=3)
    assert paper == _equal_work(load_config(preset="paper", overrides={"rating": {"anchor": 0.0}}), windows=3)
