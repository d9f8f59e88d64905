"""Stage "evaluate" with the sequential own-data test (uniqueness.own_test = "sequential", ours).

One small real window (local network, tiny model, 4 peers, about 6 own batches a peer): the
sequential test keeps the four recorded losses bit for bit, decides b from per-batch improvements,
draws the same extra batches on every run, records what it saw in the audit rows, and a replay
of such a window reproduces every recorded value. The paper preset keeps the paper's rule.
"""

from __future__ import annotations

import pytest

from gauntlet.audit.store import AuditStore
from gauntlet.config import load_config, with_overrides
from gauntlet.localnet.network import init_network
from gauntlet.replay import replay_range
from gauntlet.state import restore_state
from gauntlet.uniqueness import draw_order
from gauntlet.window import audit, evaluate
from gauntlet.window.context import context_for
from gauntlet.window.pipeline import Direct, validate_window
from tests.gauntlet.window import filtered_window_zero

ROSTER = ["honest"] * 3 + ["data_ignorer"]
SEQUENTIAL = {"uniqueness": {"own_test": "sequential", "own_margin": 0.0, "own_max_batches": 8}}


@pytest.fixture(scope="module")
def window(tmp_path_factory, prepared_data):
    """Window 0 of a 4-peer network, mined and filtered (two windows mined make window 0 ready)."""
    corpus, tokenizer = prepared_data
    net = init_network(tmp_path_factory.mktemp("net"), behaviours=ROSTER, corpus=corpus, tokenizer=tokenizer,
                       force=True, overrides={"data": {"rows_per_page": 8}, "filter": {"put_window_s": 1.0},
                                              "aggregation": {"min_peers": 1}, **SEQUENTIAL})
    return (net, *filtered_window_zero(net))


def test_sequential_test_keeps_the_losses_and_decides_per_batch(window):
    net, cfg, plan, fetched, filtered = window
    chosen = list(filtered.chosen)
    assert len(chosen) == len(ROSTER)
    margin_cfg = with_overrides(cfg, {"uniqueness": {"own_test": "margin"}})
    margin = evaluate.run(margin_cfg, plan, fetched, chosen)
    got = evaluate.run(cfg, plan, fetched, chosen)
    assert got.losses == margin.losses  # the four floats, bit for bit
    assert not margin.own_tests and set(got.own_tests) == set(chosen)
    ctx = context_for(cfg)
    for uid in chosen:
        test = got.own_tests[uid]
        sampled, extra = evaluate.own_batches(cfg, ctx, plan, uid)
        assert len(sampled) <= test.own_batches <= min(len(sampled) + len(extra), 8)
        assert got.scores[uid].indicator == test.indicator in (-1, 0, 1)
        assert margin.scores[uid].indicator == (1 if margin.losses[uid].own_improvement
                                                > margin.losses[uid].gradient_score else -1)
    assert evaluate.run(cfg, plan, fetched, chosen) == got  # same seed: same batches drawn, same b


def test_extra_own_batches_are_the_unsampled_ones_in_a_seeded_order(window):
    net, cfg, plan, *_ = window
    ctx = context_for(cfg)
    uid = net.uids("honest")[0]
    sampled, extra = evaluate.own_batches(cfg, ctx, plan, uid)
    again_sampled, again = evaluate.own_batches(cfg, ctx, plan, uid)
    assert len(extra) >= 2 and all(a.equal(b) for a, b in zip(extra, again))
    assert all(a.equal(b) for a, b in zip(sampled, again_sampled))
    assert not any(e.equal(s) for e in extra for s in sampled if e.shape == s.shape)
    assert draw_order(len(extra), plan.seed + uid) != sorted(draw_order(len(extra), plan.seed + uid)) or len(extra) < 3


def test_audit_rows_record_what_the_test_saw(window):
    net, cfg, plan, fetched, filtered = window
    got = evaluate.run(cfg, plan, fetched, list(filtered.chosen))
    state = Direct()("restore", cfg, plan.window)
    rated = Direct()("rate", cfg, plan.window, state, filtered, got)
    rows = {r["uid"]: r for r in audit.score_rows(plan.window, filtered, got, rated, cfg.uniqueness.ema)}
    for uid, test in got.own_tests.items():
        row = rows[uid]
        assert (row["own_batches"], row["own_difference"], row["own_std_error"]) == \
               (test.own_batches, test.difference, test.std_error)
        assert row["indicator"] == test.indicator


def test_paper_preset_keeps_the_paper_rule():
    paper = load_config(preset="paper").uniqueness
    assert (paper.own_test, paper.own_margin) == ("margin", 0.0)


@pytest.mark.slow
def test_replay_of_a_sequential_window_is_identical(window):
    net, cfg, *_ = window
    store = AuditStore(cfg.audit.root)
    validate_window(Direct(), cfg, 0, state=restore_state(store))
    scores = store.read("scores")
    assert scores["own_batches"].null_count() < scores.height
    for report in replay_range(store, 0, 0):
        assert report.identical, report.differences
