"""Which peers are evaluated: all of them (ours), or the paper's sample by bins and age."""

from __future__ import annotations

from collections import Counter

from gauntlet.config import load_config
from gauntlet.ratings import PeerState
from gauntlet.window.filter import select_for_evaluation

PAPER, OURS = load_config(preset="paper"), load_config()


def test_default_policy_evaluates_every_candidate():
    assert select_for_evaluation([5, 1, 3], {}, 10, seed=1, cfg=OURS) == [1, 3, 5]


def test_paper_policy_samples_a_few_deterministically():
    candidates = list(range(20))
    peers = {u: PeerState(uid=u, mu=25, sigma=8, final_score=float(u), last_evaluated_window=9) for u in candidates}
    chosen = select_for_evaluation(candidates, peers, 10, seed=7, cfg=PAPER)
    assert len(chosen) == PAPER.scoring.peers_per_window == len(set(chosen))
    assert chosen == select_for_evaluation(candidates, peers, 10, seed=7, cfg=PAPER)


def test_paper_policy_favours_peers_not_evaluated_for_long():
    candidates = list(range(10))
    peers = {u: PeerState(uid=u, mu=25, sigma=8, last_evaluated_window=99 if u else 0) for u in candidates}
    counts = Counter(u for seed in range(200) for u in select_for_evaluation(candidates, peers, 100, seed, PAPER))
    assert counts[0] == max(counts.values())  # 100 windows unseen beats 1 window unseen

