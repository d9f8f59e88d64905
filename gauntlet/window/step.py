"""Stage "step": the update of window W applied to theta_W, giving theta_{W+1}.

The aggregation set is the gather list in force for W (chosen by the validator from earlier
weights and published) intersected with the peers whose files passed the public checks of
stage 1. Before any gather list exists (a new network) every accepted peer is used, or with
`aggregation.startup = multi_krum` (ours) the ones Multi-Krum keeps. An honest peer in sync
computes the same set and the same step (the local network does exactly this).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import Tensor

from gauntlet.aggregation import aggregate, multi_krum, peer_distances, sign_step, tolerated
from gauntlet.codec import DCTCodec
from gauntlet.config import AggregationConfig, GauntletConfig
from gauntlet.filter import probe_values
from gauntlet.ratings import ValidatorState
from gauntlet.rules.sync import MIN_TRACKED_ELEMENTS, ema_of, update_sync_ema
from gauntlet.submission import Submission
from gauntlet.window.context import checkpoint_path, context_for, state_hash
from gauntlet.window.fetch import Fetched
from gauntlet.window.filter import Filtered
from gauntlet.window.load import load_submission
from gauntlet.window.plan import WindowPlan


@dataclass(frozen=True)
class Stepped:
    """Result of stage "step"."""

    gather: tuple[int, ...]
    """The peers whose updates were aggregated (the aggregation set)."""
    stepped: bool
    """False when nobody qualified: theta_{W+1} = theta_W."""
    checkpoint_before: str
    checkpoint_after: str
    sync_ema: str = ""
    """The 2026 sync rule's EMA of each probed parameter's change, after this step ("" when off)."""


def advance_ema(ema_json: str, theta: Mapping[str, Tensor], cfg: GauntletConfig) -> str:
    """The sync EMA after the step that produced `theta` (`rules.sync_iqm`; "" when off).

    Every node that follows the same checkpoints computes the same text (the validator after its
    step, the miners after theirs), so stage 1's sync verdicts, which decide what everyone
    aggregates, agree.
    """
    if not cfg.rules.sync_iqm:
        return ""
    tracked = {n: p for n, p in theta.items() if p.numel() >= MIN_TRACKED_ELEMENTS}
    probe = probe_values(tracked, cfg.filter.probe_elements)
    return update_sync_ema(ema_of(ema_json), probe, cfg.rules.sync_ema_alpha).to_json()


def aggregation_set(accepted: Sequence[int], gather: Sequence[int] | None) -> list[int]:
    """The candidates: the accepted peers of the gather list in force, or every accepted peer."""
    if gather is None:
        return sorted(accepted)
    return sorted(set(accepted) & set(gather))


def choose_aggregated(accepted: Sequence[int], gather: Sequence[int] | None, subs: Mapping[int, Submission],
                      codec: DCTCodec, shapes: Mapping[str, tuple[int, ...]], cfg: AggregationConfig) -> list[int]:
    """The peers whose updates are merged: `aggregation_set`, and before the first gather list
    (`gather` None) under `startup = multi_krum` the Multi-Krum subset of it. `subs` must hold
    every candidate's submission."""
    uids = aggregation_set(accepted, gather)
    if gather is not None or cfg.startup == "all":
        return uids
    f = tolerated(len(uids), cfg.startup_hostile)
    if f == 0:  # too few files (or none assumed hostile) for Multi-Krum to drop any
        return uids
    keep = multi_krum(peer_distances(codec, [subs[u].grads for u in uids], shapes), f)
    return [uids[i] for i in keep]


def apply_aggregate(theta: Mapping[str, Tensor], subs: Mapping[int, Submission], uids: Sequence[int],
                    codec: DCTCodec, shapes: Mapping[str, tuple[int, ...]], lr: float, merge: str = "choosers") -> bool:
    """Step theta in place with the peers' merged update (aggregation.merge); False (no step) when
    nobody qualifies."""
    if not uids:
        return False
    delta = aggregate(codec, [subs[u].grads for u in uids], shapes, merge)
    sign_step(theta, delta, lr)
    return True


def run(cfg: GauntletConfig, plan: WindowPlan, fetched: Fetched, filtered: Filtered, state: ValidatorState) -> Stepped:
    """theta_W -> theta_{W+1}, saved as the checkpoint of W + 1."""
    listed = state.gather_for(plan.window)
    ctx = context_for(cfg)
    records = fetched.by_uid()
    with ctx.lock:
        theta = ctx.load_theta(cfg.validator.workdir, plan.window)
        subs = {u: load_submission(cfg, ctx, plan, records[u]) for u in aggregation_set(filtered.accepted, listed)}
        gather = choose_aggregated(filtered.accepted, listed, subs, ctx.codec, ctx.spec.shapes, cfg.aggregation)
        before = state_hash(checkpoint_path(cfg.validator.workdir, plan.window))
        ctx.holds = None  # stepped in place below: no longer theta_W until saved as W + 1
        stepped = apply_aggregate(theta, subs, gather, ctx.codec, ctx.spec.shapes, plan.lr, cfg.aggregation.merge)
        after = ctx.save_theta(cfg.validator.workdir, plan.window + 1)
        sync_ema = advance_ema(state.sync_ema, theta, cfg)
    return Stepped(tuple(gather), stepped, before, after, sync_ema)
