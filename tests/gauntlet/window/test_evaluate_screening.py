"""Stage "evaluate" with screening on (gauntlet/screening.py wired into the window).

One small real window (local network, tiny model, 7 peers) evaluated with and without screening:
the exact peers' losses are the same bits as exact scoring's, the screened peers get a calibrated
score and no own-data losses (so B is left alone), the audit rows say which was which, and a
replay of a screened window reproduces every recorded value.
"""

from __future__ import annotations

import math

import pytest
import torch

from gauntlet.audit.store import AuditStore
from gauntlet.config import with_overrides
from gauntlet.localnet.network import init_network
from gauntlet.ratings import PeerScore, ValidatorState, WindowOutcome, advance
from gauntlet.replay import replay_range
from gauntlet.model import build_model
from gauntlet.screening import choose_exact, random_gradient
from gauntlet.state import restore_state
from gauntlet.verdicts import Reason, Verdict
from gauntlet.window import audit, evaluate
from gauntlet.window.pipeline import Direct, validate_window
from tests.gauntlet.window import filtered_window_zero

ROSTER = ["honest"] * 5 + ["noise", "sign_flip"]
SCREEN = {"screening": {"enabled": True, "margin": 0, "max_near": 1, "audit_peers": 1},
          "aggregation": {"gather_size": 2, "min_peers": 1}}


@pytest.fixture(scope="module")
def window(tmp_path_factory, prepared_data):
    """Window 0 of a 7-peer network, its peers mined and filtered (nothing validated yet; two
    windows mined make window 0 ready)."""
    corpus, tokenizer = prepared_data
    net = init_network(tmp_path_factory.mktemp("net"), behaviours=ROSTER, corpus=corpus, tokenizer=tokenizer,
                       force=True, overrides={"data": {"rows_per_page": 4}, "filter": {"put_window_s": 1.0},
                                              **SCREEN})
    return (net, *filtered_window_zero(net, with_overrides(net.config, {"screening": {"enabled": False}})))


def test_screened_evaluate_scores_the_chosen_exactly_and_calibrates_the_rest(window):
    net, cfg, plan, fetched, filtered = window
    screened_cfg = with_overrides(cfg, {"screening": {"enabled": True}})
    chosen = list(filtered.chosen)
    assert len(chosen) == len(ROSTER)
    exact = evaluate.run(cfg, plan, fetched, chosen)
    got = evaluate.run(screened_cfg, plan, fetched, chosen)

    assert set(got.estimates) == set(chosen) and all(math.isfinite(e) for e in got.estimates.values())
    picked = choose_exact(got.estimates, screened_cfg, plan.seed)
    assert sorted(got.losses) == picked and 0 < len(picked) < len(chosen)
    assert got.screened == frozenset(chosen) - set(picked)
    assert not got.verdicts and set(got.scores) == set(chosen)
    for uid in picked:  # the same losses as exact scoring (L_rand_before from the backward pass's forward)
        mine, theirs = got.losses[uid], exact.losses[uid]
        assert mine.own_before == theirs.own_before and mine.own_after == theirs.own_after
        assert mine.rand_after == theirs.rand_after
        assert mine.rand_before == pytest.approx(theirs.rand_before, rel=1e-9)
        assert got.scores[uid].indicator in (-1, 0, 1)  # 0: the sequential test undecided
    for uid in got.screened:
        assert got.scores[uid].own_improvement is None and got.scores[uid].indicator is None
    # the estimate ranks the hostile peers last, as the exact scores do
    hostile = set(net.uids("noise") + net.uids("sign_flip"))
    assert set(sorted(chosen, key=got.estimates.get)[:2]) == hostile
    top = sorted(chosen, key=lambda u: -got.estimates[u])[:screened_cfg.aggregation.gather_size]
    assert set(top) <= set(got.losses) and not hostile & set(top)
    assert evaluate.run(screened_cfg, plan, fetched, chosen) == got  # a pure function of its inputs


def test_chunks_of_the_exact_set_give_the_same_result(window):
    net, cfg, plan, fetched, filtered = window
    screened_cfg = with_overrides(cfg, {"screening": {"enabled": True}})
    chosen = list(filtered.chosen)
    whole = evaluate.run(screened_cfg, plan, fetched, chosen)
    first = evaluate.screen(screened_cfg, plan, fetched, chosen)
    assert first.exact == tuple(sorted(whole.losses)) and first.estimates == whole.estimates
    parts = [evaluate.run(screened_cfg, plan, fetched, first.exact[i:i + 2], first.rand_before, first)
             for i in range(0, len(first.exact), 2)]
    assert evaluate.calibrate(first, evaluate.Evaluated.merge(parts)) == whole
    with pytest.raises(ValueError, match="call `screen` first"):
        evaluate.run(screened_cfg, plan, fetched, chosen[:2], first.rand_before)
    outside = sorted(set(chosen) - set(first.exact))[:1]
    with pytest.raises(ValueError, match="not in the screened exact set"):
        evaluate.run(screened_cfg, plan, fetched, outside, first.rand_before, first)


def test_screened_peers_play_the_match_but_keep_their_B(window):
    net, cfg, *_ = window
    scores = {1: PeerScore(0.02, 0.03, 1), 2: PeerScore(0.01, 0.02, 1), 3: PeerScore(0.005, 0.001, -1)}
    ok = {u: Verdict(u, Reason.OK) for u in scores}
    before = advance(ValidatorState(), WindowOutcome(0, ok, scores, {}), cfg)[0]
    assert before.peers[2].moving_average > 0
    scores[2] = PeerScore(0.01, None, None)  # screened in window 1
    after, records = advance(before, WindowOutcome(1, ok, scores, {}), cfg)
    assert after.peers[2].moving_average == before.peers[2].moving_average
    assert after.peers[2].mu != before.peers[2].mu and after.peers[2].last_evaluated_window == 1
    assert after.peers[1].moving_average != before.peers[1].moving_average
    assert {r.state.uid for r in records if r.rated_in_match} == {1, 2, 3}


def test_audit_rows_record_the_estimate_and_the_exact_set(window):
    net, cfg, plan, fetched, filtered = window
    screened_cfg = with_overrides(cfg, {"screening": {"enabled": True}})
    got = evaluate.run(screened_cfg, plan, fetched, list(filtered.chosen))
    state = Direct()("restore", cfg, plan.window)
    rated = Direct()("rate", screened_cfg, plan.window, state, filtered, got)
    rows = {r["uid"]: r for r in audit.score_rows(plan.window, filtered, got, rated, cfg.uniqueness.ema)}
    for uid, row in rows.items():
        assert row["score_estimate"] == got.estimates[uid]
        assert row["scored_exactly"] is (uid in got.losses)
        screened = uid in got.screened
        assert (row["loss_own_before"] is None) is screened and (row["moving_average"] is None) is screened
        assert row["gradient_score"] == got.scores[uid].gradient_score
    plain = evaluate.run(cfg, plan, fetched, list(filtered.chosen))
    rows = audit.score_rows(plan.window, filtered, plain, rated, cfg.uniqueness.ema)
    assert all(r["score_estimate"] is None and r["scored_exactly"] is True for r in rows)


@pytest.mark.slow
def test_replay_of_screened_windows_is_identical(window, tmp_path):
    net, cfg, *_ = window
    screened_cfg = with_overrides(net.config, {"screening": {"enabled": True}})
    store = AuditStore(screened_cfg.audit.root)
    state = restore_state(store)
    validate_window(Direct(), screened_cfg, 0, state=state)
    scores = store.read("scores")
    assert scores.filter(~scores["scored_exactly"]).height > 0 and scores["score_estimate"].null_count() == 0
    for report in replay_range(store, 0, 0):
        assert report.identical, report.differences
        assert report.compared > 50


def test_random_gradient_puts_the_deterministic_switch_back():
    """The backward pass runs deterministic (its estimates are recorded and replayed bit for bit)
    and leaves torch's process-wide switch as it found it."""
    model = build_model("tiny", 256, seed=3)
    g = torch.Generator().manual_seed(2)
    batches = [torch.randint(0, 256, (2, 16), generator=g) for _ in range(2)]
    assert not torch.are_deterministic_algorithms_enabled()
    first = random_gradient(model, batches)
    assert not torch.are_deterministic_algorithms_enabled()
    again = random_gradient(model, batches)
    assert first.loss == again.loss and all(torch.equal(first.grad[n], again.grad[n]) for n in first.grad)
