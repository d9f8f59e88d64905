"""Stage "rate": the gather list under a smoothed F (weights.score_ema) takes only peers whose
score this window is positive; under the paper (score_ema 0) the mask changes nothing."""

from __future__ import annotations

from gauntlet.config import load_config, with_overrides
from gauntlet.ratings import PeerScore, PeerState, ValidatorState
from gauntlet.verdicts import Verdict
from gauntlet.window import rate
from gauntlet.window.evaluate import Evaluated
from gauntlet.window.filter import Filtered

UIDS = (1, 2, 3)


def _window(cfg, state: ValidatorState):
    """Window 0 (a refresh window): peer 3's update does not help its own pages (b = -1, B < 0)."""
    filtered = Filtered(verdicts={u: Verdict.accept(u) for u in UIDS}, accepted=UIDS, chosen=UIDS,
                        sync={u: 1.0 for u in UIDS})
    scores = {1: PeerScore(0.03, 0.05, +1), 2: PeerScore(0.02, 0.04, +1), 3: PeerScore(0.01, 0.0, -1)}
    return rate.run(cfg, 0, state, filtered, Evaluated(scores=scores))


def _state() -> ValidatorState:
    """Three well-rated peers with F > 0 before the window; peer 3's B is small, so one b = -1
    takes it below 0."""
    return ValidatorState(peers={u: PeerState(uid=u, mu=30.0, sigma=2.0, final_score=20.0,
                                              moving_average=0.02 if u == 3 else 0.5) for u in UIDS})


def test_a_lapsed_peer_is_paid_from_its_smoothed_score_but_not_gathered_by_weight():
    cfg = with_overrides(load_config(preset="paper"), ["weights.own_data=gate", "weights.score_ema=0.5",
                                                        "aggregation.min_peers=1"])
    rated = _window(cfg, _state())
    record = next(r for r in rated.records if r.state.uid == 3)
    assert rated.state.peers[3].moving_average < 0 and record.window_score == 0.0  # the gate closed
    assert rated.state.peers[3].final_score == 10.0 and rated.weights[3] > 0  # paid from half its F ...
    assert rated.state.gather_for(4) == (1, 2)  # ... but its file earns no place by weight


def test_without_smoothing_the_mask_changes_nothing():
    cfg = with_overrides(load_config(preset="paper"), ["aggregation.min_peers=1"])
    rated = _window(cfg, _state())
    positive = {u for u, w in rated.weights.items() if w > 0}
    assert set(rated.state.gather_for(4)) == positive
