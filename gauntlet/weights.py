"""Weights (the peers' pay) and the aggregation set, both derived from final scores."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from gauntlet.config import AggregationConfig, ChainConfig, WeightConfig
from gauntlet.ratings import PeerState, ValidatorState


def power_normalise(final_scores: Mapping[int, float], cfg: WeightConfig) -> dict[int, float]:
    """`w_k = F_k ** p / sum_j F_j ** p` over peers with F > 0; all zero when the sum is tiny.

    Every known uid gets an entry, so a peer's zero weight is recorded, not left out.
    """
    powered = {u: (f ** cfg.power if f > 0 else 0.0) for u, f in final_scores.items()}
    total = sum(powered.values())
    if total <= cfg.min_sum:
        return {u: 0.0 for u in final_scores}
    return {u: v / total for u, v in powered.items()}


def due_on_chain(window: int, chain: ChainConfig, weights: WeightConfig) -> bool:
    """Weights are set every `set_interval` windows of global step (paper: 50)."""
    return (window - chain.start_window) % weights.set_interval == 0


def choose_gather(weights: Mapping[int, float], peers: Mapping[int, PeerState], eligible: set[int],
                  cfg: AggregationConfig) -> tuple[int, ...]:
    """Top G by weight; topped up to `min_peers` with the best-rated eligible peers.

    `eligible` are the peers whose file passed stage 1 in the window just validated: a peer with
    no usable file is not worth a place. Ties are broken by uid so every node agrees.
    """
    ranked = sorted((u for u in weights if weights[u] > 0), key=lambda u: (-weights[u], u))
    chosen = ranked[: cfg.gather_size]
    if len(chosen) < cfg.min_peers:
        rest = sorted((u for u in eligible if u not in chosen),
                      key=lambda u: (-(peers[u].ordinal if u in peers else 0.0), u))
        chosen += rest[: cfg.min_peers - len(chosen)]
    return tuple(sorted(chosen))


def schedule_gather(state: ValidatorState, window: int, gather: tuple[int, ...],
                    chain: ChainConfig, cfg: AggregationConfig) -> ValidatorState:
    """Refresh the gather list every `refresh_every` windows.

    The list chosen after validating W is used from window W + validator_offset +
    effective_after: by then no honest peer has aggregated that window yet (they aggregate W' at
    the start of W'+1, and the validator only finishes W during W + validator_offset).
    """
    if (window - chain.start_window) % cfg.refresh_every != 0:
        return state
    effective = window + chain.validator_offset + cfg.effective_after
    kept = [entry for entry in state.gather_schedule if entry[0] < effective]
    # Later windows can only use the entry in force now or ones not yet in force.
    in_force = [e for e in kept if e[0] <= window][-1:]
    pending = [e for e in kept if e[0] > window]
    return replace(state, gather_schedule=(*in_force, *pending, (effective, gather)))
