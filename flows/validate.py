"""`validate-window`: one flow run per training window; its stages are the pipeline's, as tasks.

The order of the stages lives in `gauntlet/window/pipeline.py` (the same function the replays,
the local network and the benchmarks call); here each stage runs as a Prefect task, so the UI
shows restore, plan, fetch, filter, evaluate, rate, step, weights, publish and audit per window.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect_dask import DaskTaskRunner

from gauntlet.config import GauntletConfig, load_config
from gauntlet.identity import with_identity
from gauntlet.window.pipeline import already_validated, validate_window as run_window
from tasks import events, report
from tasks.limits import window_lock
from tasks.secrets import secrets_to_env
from tasks.window import PrefectStages


def resolve_config(config: str | None, network: str | None, overrides: list[str] | None = None) -> GauntletConfig:
    """A network folder's own config.toml, else a TOML file, else the default preset; on a
    bittensor chain the validator's hotkey comes from its wallet."""
    path = Path(network) / "config.toml" if network else (Path(config) if config else None)
    return with_identity(load_config(path, overrides=overrides or ()))


def _runs_in_parallel() -> bool:
    """Scoring is split into chunks only on a Dask cluster, where they run on separate workers
    (on one machine they would queue on the one model lock and only add overhead)."""
    return isinstance(FlowRunContext.get().task_runner, DaskTaskRunner)


def _started_on_its_own() -> bool:
    """A run of its own (the `rerun` deployment, the UI, the CLI), not `follow-chain`'s subflow,
    which already holds the window lock (taking it again would wait on ourselves)."""
    return FlowRunContext.get().flow_run.parent_task_run_id is None


@flow(name="validate-window", flow_run_name="window-{window}", log_prints=True)
def validate_window(window: int, config: str | None = None, network: str | None = None,
                    rerun: bool = False, force_weights: bool = False, overrides: list[str] | None = None) -> dict:
    """Validate one closed training window; a window already in the audit tables is skipped
    unless `rerun` (then its rows are replaced and weights are set again only if `force_weights`).
    `overrides` are `section.field=value` settings on top of the config (e.g. scoring.device=cuda).
    Started on its own, it reads the wallet's Secret blocks and waits for the one window slot
    (`tasks.limits.WINDOW_LOCK`), as `follow-chain` does for its subflows."""
    if _started_on_its_own():
        filled = secrets_to_env()
        if filled:
            get_run_logger().info("settings from Secret blocks: %s", ", ".join(filled))
        with window_lock():
            return _validate(window, config, network, rerun, force_weights, overrides)
    return _validate(window, config, network, rerun, force_weights, overrides)


def _validate(window: int, config: str | None, network: str | None, rerun: bool, force_weights: bool,
              overrides: list[str] | None) -> dict:
    cfg = resolve_config(config, network, overrides)
    if already_validated(cfg, window) and not rerun:
        get_run_logger().info("window %s is already validated; pass rerun=True to recompute it", window)
        return {"window": window, "skipped": True}
    stages = PrefectStages(window, parallel=_runs_in_parallel(), gpu=cfg.scaleout.gpu_resource)
    result = run_window(stages, cfg, window, rerun=rerun, force_weights=force_weights)
    report.window_artifacts(window, result)
    answer = None if result.weights is None else asdict(result.weights)
    events.emit_window_events(window, [v.row() for v in result.rated.verdicts.values()], result.rated.weights,
                              answer, {u: f.action for u, f in result.filtered.copies.items()},
                              list(result.stepped.gather), cfg.validator.hotkey)
    return {"window": window, "skipped": False, "weights": result.rated.weights, "gather": list(result.stepped.gather)}


def with_task_runner(cfg: GauntletConfig):
    """The window flow with the task runner the config asks for (threads, or a Dask cluster)."""
    if not cfg.scaleout.dask_address:
        return validate_window
    return validate_window.with_options(task_runner=DaskTaskRunner(address=cfg.scaleout.dask_address))
