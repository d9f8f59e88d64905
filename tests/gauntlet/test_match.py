"""The window's OpenSkill match: Plackett-Luce by hand, and the anchor player's match."""

from __future__ import annotations

import math

import pytest

from gauntlet.config import load_config
from gauntlet.match import anchor_ordinal, anchored_match, play_match
from gauntlet.ratings import PeerState

CFG = load_config(preset="paper")


def _plackett_luce_by_hand(mus, sigmas, beta, tau, kappa=1e-4):
    """Weng & Lin's Plackett-Luce update for one-player teams with distinct ranks (index = rank)."""
    sigmas = [math.sqrt(s * s + tau * tau) for s in sigmas]  # additive dynamics factor first
    c = math.sqrt(sum(s * s + beta * beta for s in sigmas))
    e = [math.exp(m / c) for m in mus]
    C = [sum(e[s] for s in range(q, len(mus))) for q in range(len(mus))]  # players ranked >= q
    out = []
    for i, (mu, sigma) in enumerate(zip(mus, sigmas)):
        omega = sum((1.0 if q == i else 0.0) - e[i] / C[q] for q in range(i + 1)) * sigma**2 / c
        gamma = sigma / c
        delta = sum(gamma * e[i] / C[q] * (1 - e[i] / C[q]) for q in range(i + 1)) * sigma**2 / c**2
        out.append((mu + omega, sigma * math.sqrt(max(1 - delta, kappa))))
    return out


def test_match_matches_hand_computed_plackett_luce():
    peers = {u: PeerState.new(u, CFG.rating) for u in (1, 2, 3)}
    scores = {1: 0.03, 2: 0.01, 3: 0.02}  # ranks: 1 first, 3 second, 2 last
    rated = play_match(peers, scores, CFG.rating)
    by_hand = _plackett_luce_by_hand([25.0] * 3, [25 / 3] * 3, beta=7.0, tau=0.1)
    for uid, rank in ((1, 0), (3, 1), (2, 2)):
        assert rated[uid].mu == pytest.approx(by_hand[rank][0], rel=1e-12)
        assert rated[uid].sigma == pytest.approx(by_hand[rank][1], rel=1e-12)




def test_the_anchor_is_one_more_player_scoring_its_fraction_of_the_median():
    anchored = load_config(preset="paper", overrides={"rating": {"anchor": 0.5}}).rating
    peers = {u: PeerState.new(u, anchored) for u in (1, 2, 3)}
    scores = {1: 0.03, 2: 0.01, 3: 0.02}  # median 0.02: the anchor scores 0.01, tied with uid 2
    rated, anchor = anchored_match(peers, scores, scores, None, anchored)
    with_player = play_match({**peers, 4: PeerState.new(4, anchored)}, {**scores, 4: 0.01}, anchored)
    assert rated == {u: with_player[u] for u in (1, 2, 3)} and anchor == (with_player[4].mu, with_player[4].sigma)
    assert anchor_ordinal(anchor, anchored) == pytest.approx(anchor[0] - 3 * anchor[1])
    assert anchor_ordinal(anchor, CFG.rating) == 0.0  # off: the paper's ordinal
    assert anchored_match(peers, scores, scores, anchor, CFG.rating) == (play_match(peers, scores, CFG.rating), anchor)
    assert anchored_match(peers, {1: 0.03}, {1: 0.03}, None, anchored) == ({}, None)  # no match, no anchor
