"""The stages of one window as Prefect tasks (see flows/validate.py for their order)."""

from __future__ import annotations

from dataclasses import replace

from prefect import task
from prefect.cache_policies import NONE

from gauntlet.audit.store import AuditStore
from gauntlet.chain import open_chain
from gauntlet.config import GauntletConfig
from gauntlet.ratings import ValidatorState
from gauntlet.validator import (NotReady, audit_tables, ensure_ready, publish_gather, recorded_chain_result,
                                restore_state, set_weights_stage)
from gauntlet.verdicts import Verdict
from gauntlet.window.checks import FilterResult
from gauntlet.window.context import cached_context
from gauntlet.window.evaluate import Evaluation
from gauntlet.window.fetch import FetchRecord, fetch_window
from gauntlet.window.outcome import Rated, rate_window
from gauntlet.window.plan import WindowPlan, plan_window
from gauntlet.window.step import aggregation_set
from gauntlet.window.runner import (Computed, Timings, aggregate_stage, baseline_stage, filter_stage,
                                    load_submissions, score_stage)

def _retry_unless_not_ready(task, task_run, state) -> bool:
    """A window that has not closed yet will not close during a retry: fail at once."""
    return not isinstance(state.result(raise_on_failure=False), NotReady)


CHAIN_RETRIES = dict(retries=3, retry_delay_seconds=[2, 10, 30], retry_condition_fn=_retry_unless_not_ready)


def _cfg(config_json: str) -> GauntletConfig:
    return GauntletConfig.model_validate_json(config_json)


@task(task_run_name="restore-w{window}", cache_policy=NONE)
def restore(config_json: str, window: int) -> ValidatorState:
    return restore_state(AuditStore(_cfg(config_json).audit.root), before_window=window)


@task(task_run_name="clock-w{window}", cache_policy=NONE, **CHAIN_RETRIES)
def clock(config_json: str, window: int) -> WindowPlan:
    cfg = _cfg(config_json)
    chain = open_chain(cfg.chain)
    ensure_ready(chain, cfg, window)
    return plan_window(chain, cfg, window, cfg.validator.hotkey)


@task(task_run_name="fetch-w{window}", cache_policy=NONE)
def fetch(config_json: str, window: int, plan: WindowPlan) -> list[FetchRecord]:
    ctx = cached_context(config_json)
    return fetch_window(plan, ctx.archive, ctx.cfg)


@task(task_run_name="filter-w{window}", cache_policy=NONE)
def filter_peers(config_json: str, window: int, plan: WindowPlan, records: list[FetchRecord],
                 state: ValidatorState) -> tuple[FilterResult, dict[int, Verdict], list[int]]:
    filtered, verdicts, chosen = filter_stage(cached_context(config_json), plan, records, state)
    return replace(filtered, submissions={}), verdicts, chosen  # tensors stay out of Prefect


@task(task_run_name="baseline-w{window}", cache_policy=NONE)
def baseline(config_json: str, window: int, plan: WindowPlan) -> float | None:
    """L_rand_before, once for the window (the score chunks share it)."""
    return baseline_stage(cached_context(config_json), plan)


@task(task_run_name="score-w{window}-{label}", cache_policy=NONE)
def score(config_json: str, window: int, plan: WindowPlan, records: list[FetchRecord], uids: list[int],
          label: str, rand_before: float | None) -> Evaluation:
    ctx = cached_context(config_json)
    return score_stage(ctx, plan, load_submissions(ctx, plan, records, uids), rand_before)


@task(task_run_name="ratings-w{window}", cache_policy=NONE)
def ratings(config_json: str, window: int, state: ValidatorState, verdicts: dict[int, Verdict],
            filtered: FilterResult, evaluation: Evaluation) -> Rated:
    return rate_window(state, window, verdicts, filtered, evaluation, _cfg(config_json))


@task(task_run_name="aggregate-w{window}", cache_policy=NONE)
def aggregate(config_json: str, window: int, plan: WindowPlan, records: list[FetchRecord],
              accepted: list[int], state: ValidatorState) -> tuple[list[int], bool, str, str]:
    ctx = cached_context(config_json)
    uids = aggregation_set(accepted, state.gather_for(window))  # only these files are needed
    return aggregate_stage(ctx, plan, load_submissions(ctx, plan, records, uids), accepted, state)


@task(task_run_name="chain-w{window}", cache_policy=NONE, **CHAIN_RETRIES)
def set_weights(config_json: str, window: int, rated: Rated, force: bool, rerun: bool) -> dict | None:
    """Set weights when due; a rerun keeps the recorded answer and sets nothing unless forced."""
    cfg = _cfg(config_json)
    if rerun and not force:
        return recorded_chain_result(AuditStore(cfg.audit.root), window)
    chain = open_chain(cfg.chain)
    result = set_weights_stage(chain, cfg, window, rated.weights, cfg.validator.hotkey, force)
    publish_gather(chain, cfg.validator.hotkey, rated.state)
    return result


@task(task_run_name="audit-w{window}", cache_policy=NONE)
def audit(config_json: str, window: int, plan: WindowPlan, records: list[FetchRecord], done: Computed,
          chain_result: dict | None, timings: dict[str, float], overwrite: bool) -> list[str]:
    ctx = cached_context(config_json)
    store = AuditStore(ctx.cfg.audit.root)
    tables = audit_tables(ctx, plan, records, done, chain_result, ctx.cfg.validator.hotkey, Timings(timings))
    return [str(p) for p in store.write_window(window, tables, overwrite=overwrite).values()]
