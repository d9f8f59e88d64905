"""One window's OpenSkill Plackett-Luce match, with or without the anchor player (ours).

Peers are ranked by gradient score (higher wins); `ratings.advance` plays the match once a window
and reads each peer's ordinal (mu - 3 sigma) off the result. With `rating.anchor` a virtual anchor
player joins at a fraction of the window's median score, and final scores are measured from its
ordinal instead of from 0 (`anchor_ordinal`).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from openskill.models import PlackettLuce

from gauntlet.config import RatingConfig

if TYPE_CHECKING:
    from gauntlet.ratings import PeerState

Anchor = tuple[float, float]
"""The anchor player's (mu, sigma)."""


def rating_model(cfg: RatingConfig) -> PlackettLuce:
    return PlackettLuce(mu=cfg.mu, sigma=cfg.sigma, beta=cfg.beta, tau=cfg.tau)


def _rate(players: Sequence[tuple[str, float, float]], scores: Sequence[float], cfg: RatingConfig) -> list[Anchor]:
    """(name, mu, sigma) one-player teams -> their (mu, sigma) after one match at `scores`."""
    model = rating_model(cfg)
    teams = [[model.rating(mu=mu, sigma=sigma, name=name)] for name, mu, sigma in players]
    return [(team[0].mu, team[0].sigma) for team in model.rate(teams, scores=list(scores))]


def play_match(peers: Mapping[int, PeerState], scores: Mapping[int, float], cfg: RatingConfig) -> dict[int, PeerState]:
    """One Plackett-Luce match among the scored peers, ranked by gradient score (higher wins).

    Fewer than two players: no match (openskill refuses one team), ratings unchanged.
    """
    rated, _ = anchored_match(peers, scores, {}, None, cfg)  # nothing evaluated: no anchor plays
    return rated


def anchored_match(peers: Mapping[int, PeerState], scores: Mapping[int, float], evaluated: Mapping[int, float],
                   anchor: Anchor | None, cfg: RatingConfig) -> tuple[dict[int, PeerState], Anchor | None]:
    """`play_match` with the anchor player (rating.anchor > 0, ours); returns the rated peers and
    the anchor's (mu, sigma) after the match.

    The anchor's score is `cfg.anchor` x the median gradient score of the window's evaluated
    peers (`evaluated`; a missing file's place in the match under the 2026 rules does not move
    it). It plays only when the peers would have a match anyway (two or more), so a window with
    one scored peer leaves every rating, the anchor's included, as it was. It starts from the
    prior (mu, sigma) and is rated like a peer, so it drifts down while the peers beat it: the
    final score's offset (`anchor_ordinal`) is where a peer that helps `anchor` x as much as the
    typical one would stand.
    """
    uids = sorted(scores)
    if len(uids) < 2:
        return {}, anchor
    players = [(str(u), peers[u].mu, peers[u].sigma) for u in uids]
    values = [scores[u] for u in uids]
    anchored = cfg.anchor > 0 and bool(evaluated)
    if anchored:
        players.append(("anchor", *(anchor or (cfg.mu, cfg.sigma))))
        values.append(cfg.anchor * statistics.median(evaluated.values()))
    rated = _rate(players, values, cfg)
    out = {u: replace(peers[u], mu=mu, sigma=sigma) for u, (mu, sigma) in zip(uids, rated)}
    return out, rated[-1] if anchored else anchor


def anchor_ordinal(anchor: Anchor | None, cfg: RatingConfig) -> float:
    """What the final score subtracts from each peer's ordinal: the anchor's ordinal with the anchor
    on (its prior's, 0 by default, before it first plays), 0 with it off (the paper)."""
    if cfg.anchor <= 0:
        return 0.0
    mu, sigma = anchor or (cfg.mu, cfg.sigma)
    return mu - 3.0 * sigma
