"""Weights (the peers' pay) and the aggregation set, both derived from final scores."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from gauntlet.config import AggregationConfig, ChainConfig, GauntletConfig, RulesConfig, WeightConfig
from gauntlet.ratings import PeerState, ValidatorState
from gauntlet.rules.penalties import excluded_from_gather


def power_normalise(final_scores: Mapping[int, float], cfg: WeightConfig) -> dict[int, float]:
    """`w_k = F_k ** p / sum_j F_j ** p` over peers with F > 0; all zero when the sum is tiny.

    Every known uid gets an entry, so a peer's zero weight is recorded, not left out.
    """
    powered = {u: (f ** cfg.power if f > 0 else 0.0) for u, f in final_scores.items()}
    total = sum(powered.values())
    if total <= cfg.min_sum:
        return {u: 0.0 for u in final_scores}
    return {u: v / total for u, v in powered.items()}


def ramp_weights(final_scores: Mapping[int, float], gather_count: int, cfg: RulesConfig) -> dict[int, float]:
    """The reference's last pay schedule (one-covenant/templar v2.1.28, `Validator.update_weights`).

    Peers with F > 0, best first: the top `gather_count` share `gather_share` of the unburned
    weight on a linear ramp from `top_ratio` down to 1; the next `reserve_count` share the rest,
    decaying by `reserve_decay`, scaled down to stay under the smallest gather weight; then the
    unburned weights are rescaled to sum to 1 - burn. Ties go to the lower uid (the reference's
    order was its set's). Ours: the burn step runs only with `burn_share > 0` (the reference
    overwrote the burn uid's weight even at 0), and with nobody positive and no burn every weight
    is 0 rather than all of it on the burn uid. Computed in float64, the reference in float32.
    """
    burn = cfg.burn_share
    ranked = sorted((u for u, f in final_scores.items() if f > 0), key=lambda u: (-final_scores[u], u))
    gather, reserve = ranked[:gather_count], ranked[gather_count: gather_count + cfg.reserve_count]
    out = {u: 0.0 for u in final_scores}
    n = len(gather)
    ramp = [cfg.top_ratio + (1.0 - cfg.top_ratio) * i / (n - 1) if n > 1 else cfg.top_ratio for i in range(n)]
    for uid, r in zip(gather, ramp):
        out[uid] = (1.0 - burn) * cfg.gather_share * r / sum(ramp)
    tail = [cfg.reserve_decay ** i for i in range(len(reserve))]
    for uid, t in zip(reserve, tail):
        out[uid] = (1.0 - burn) * (1.0 - cfg.gather_share) * t / sum(tail)
    if gather and reserve and max(out[u] for u in reserve) > min(out[u] for u in gather):
        factor = min(out[u] for u in gather) / max(out[u] for u in reserve) * cfg.reserve_decay
        out.update({u: out[u] * factor for u in reserve})
    if burn <= 0:
        total = sum(out.values())
        return {u: w / total for u, w in out.items()} if total > 0 else out
    out[cfg.burn_uid] = 0.0
    paid = sum(out.values())
    if paid <= 0:
        return {**out, cfg.burn_uid: 1.0}
    return {**{u: w * (1.0 - burn) / paid for u, w in out.items()}, cfg.burn_uid: burn}


def compute_weights(final_scores: Mapping[int, float], cfg: GauntletConfig) -> dict[int, float]:
    """The window's weights under the configured scheme (`rules.weight_scheme`)."""
    if cfg.rules.weight_scheme == "ramp":
        return ramp_weights(final_scores, cfg.aggregation.gather_size, cfg.rules)
    return power_normalise(final_scores, cfg.weights)


def gather_exclusions(peers: Mapping[int, PeerState], cfg: RulesConfig) -> frozenset[int]:
    """Peers the 2026 rules keep out of the gather set (negative streak; see rules.excluded_from_gather)."""
    return frozenset(u for u, p in peers.items() if excluded_from_gather(p.tracker, cfg))


def due_on_chain(window: int, chain: ChainConfig, weights: WeightConfig) -> bool:
    """Weights are set every `set_interval` windows of global step (paper: 50)."""
    return (window - chain.start_window) % weights.set_interval == 0


def choose_gather(weights: Mapping[int, float], peers: Mapping[int, PeerState], eligible: set[int],
                  cfg: AggregationConfig, excluded: frozenset[int] = frozenset()) -> tuple[int, ...]:
    """Top G by weight; topped up to `min_peers` with the best-rated eligible peers.

    `eligible` are the peers whose file passed stage 1 in the window just validated: a peer with
    no usable file is not worth a place. `excluded` never get a place (`gather_exclusions`). Ties
    are broken by uid so every node agrees.
    """
    eligible = set(eligible) - excluded
    ranked = sorted((u for u in weights if weights[u] > 0 and u not in excluded), key=lambda u: (-weights[u], u))
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
