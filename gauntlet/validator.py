"""The validator's outer stages: state from the audit tables, weights on chain, publication.

``validate_window`` is the direct, Prefect-free path through one window; the Prefect flow runs
the same functions as tasks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import polars as pl

from gauntlet.audit.store import AuditStore
from gauntlet.chain import Chain, ChainError
from gauntlet.clock import first_block
from gauntlet.chain.bittensor import wallet_hotkey
from gauntlet.config import ConfigError, GauntletConfig, with_overrides
from gauntlet.ratings import PeerState, ValidatorState
from gauntlet.storage import Bucket, BucketSpec
from gauntlet.weights import due_on_chain
from gauntlet.window import rows
from gauntlet.window.context import ValidatorContext
from gauntlet.window.fetch import FetchRecord
from gauntlet.window.plan import WindowPlan
from gauntlet.window.runner import Computed, Timings, compute_window, fetch_stage

GATHER_KEY = "gauntlet/v1/gather.json"


class NotReady(RuntimeError):
    """The chain has not reached the window's validation point yet."""


def restore_state(store: AuditStore, before_window: int | None = None) -> ValidatorState:
    """Rebuild the running state from the newest audit snapshot (no other state file)."""
    windows = [w for w in store.windows() if before_window is None or w < before_window]
    if not windows:
        return ValidatorState()
    last = max(windows)
    ratings = store.read("ratings", window_id=last)
    peers = {int(r["uid"]): PeerState.from_row(r) for r in ratings.iter_rows(named=True)}
    row = store.read("windows", window_id=last).row(0, named=True)
    schedule = tuple((int(e), tuple(int(u) for u in uids)) for e, uids in json.loads(row["gather_schedule_json"]))
    return ValidatorState(last_window=last, peers=peers, gather_schedule=schedule)


def with_identity(cfg: GauntletConfig) -> GauntletConfig:
    """On a bittensor chain the wallet, not the config, says who the validator is.

    The hotkey's ss58 address is read from the wallet files (offline) into `validator.hotkey`, so
    every stage excludes the right uid, signs with it and records it.
    """
    if cfg.chain.network == "local":
        return cfg
    try:
        hotkey = wallet_hotkey(cfg.chain)
    except FileNotFoundError as exc:
        raise ConfigError(f"the validator's wallet hotkey is missing ({exc}); create it with btcli or set "
                          "chain.wallet_name, chain.wallet_hotkey and chain.wallet_path") from exc
    return with_overrides(cfg, {"validator": {"hotkey": hotkey}})


def ensure_ready(chain: Chain, cfg: GauntletConfig, window: int) -> None:
    ready_at = first_block(window + cfg.chain.validator_offset, cfg.chain.blocks_per_window)
    if chain.block() < ready_at:
        raise NotReady(f"window {window} can be validated from block {ready_at}; chain is at {chain.block()}")


def set_weights_stage(chain: Chain, cfg: GauntletConfig, window: int, weights: Mapping[int, float],
                      hotkey: str, force: bool = False) -> dict | None:
    """Set weights when due (or forced); the chain's answer, refusals included, is recorded.

    A refusal (rate limit, not registered, node down) is the validator's problem and never fails
    the window: the weights are recorded with the chain's message and set again next time.
    """
    if not (force or due_on_chain(window, cfg.chain, cfg.weights)):
        return None
    uids = sorted(u for u, w in weights.items() if w > 0)
    if not uids:
        return {"success": False, "message": "no peer has a positive weight; nothing set", "block": None}
    try:
        result = chain.set_weights(hotkey, uids, [weights[u] for u in uids], cfg.chain.version_key)
    except ChainError as exc:
        return {"success": False, "message": f"{exc.reason}: {exc}", "block": None}
    return {"success": result.success, "message": result.message, "block": result.block}


def recorded_chain_result(store: AuditStore, window: int) -> dict | None:
    """The chain's answer recorded for a window's weights (None if they were not set)."""
    if not store.has_window(window):
        return None
    rows = store.read("weights", window_id=window).filter(pl.col("set_on_chain"))
    if rows.is_empty():
        return None
    row = rows.row(0, named=True)
    return {"success": row["chain_success"], "message": row["chain_message"], "block": row["set_at_block"]}


def publish_gather(chain: Chain, hotkey: str, state: ValidatorState) -> None:
    """Write the gather schedule to the validator's own committed bucket, for the peers."""
    own = [n.uid for n in chain.metagraph() if n.hotkey == hotkey]
    commitment = chain.commitments().get(own[0]) if own else None
    if commitment is None:
        return
    payload = {"schedule": [[e, list(u)] for e, u in state.gather_schedule], "window": state.last_window}
    Bucket.from_spec(BucketSpec.from_commitment(commitment)).put(GATHER_KEY, json.dumps(payload).encode())


def audit_tables(ctx: ValidatorContext, plan: WindowPlan, records: list[FetchRecord], done: Computed,
                 chain_result: dict | None, hotkey: str | None, timings: Timings) -> dict[str, list[dict]]:
    w = plan.window
    return {
        "submissions": rows.submission_rows(w, records),
        "verdicts": rows.verdict_rows(w, done.verdicts),
        "scores": rows.score_rows(w, done.filtered, done.evaluation, done.rated.state),
        "ratings": rows.rating_rows(w, done.rated.records),
        "weights": rows.weight_rows(w, done.rated.weights, chain_result),
        "windows": [rows.window_row(plan, ctx.cfg, before=done.checkpoint_before, after=done.checkpoint_after,
                                    hotkey=hotkey, gather=done.gather, state=done.rated.state,
                                    timings=timings.seconds)],
    }


def validate_window(ctx: ValidatorContext, chain: Chain, store: AuditStore, window: int, hotkey: str,
                    state: ValidatorState, force_weights: bool = False) -> ValidatorState:
    """One whole window by direct calls; returns the new state. Writes the audit tables."""
    ensure_ready(chain, ctx.cfg, window)
    timings = Timings()
    with timings.stage("fetch"):
        plan, records = fetch_stage(ctx, chain, window, hotkey)
    done = compute_window(ctx, plan, records, state, timings)
    with timings.stage("chain"):
        chain_result = set_weights_stage(chain, ctx.cfg, window, done.rated.weights, hotkey, force_weights)
        publish_gather(chain, hotkey, done.rated.state)
    with timings.stage("audit"):
        store.write_window(window, audit_tables(ctx, plan, records, done, chain_result, hotkey, timings))
    return done.rated.state
