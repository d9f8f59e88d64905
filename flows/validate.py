"""`validate-window`: one flow run per training window; the body is the list of stages."""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

import dask

from prefect import flow, get_run_logger
from prefect_dask import DaskTaskRunner

from gauntlet.audit.store import AuditStore
from gauntlet.config import GauntletConfig, load_config
from gauntlet.validator import with_identity
from gauntlet.window.evaluate import Evaluation
from gauntlet.window.runner import Computed
from tasks import events, report, window as t


class StageClock:
    """Calls a stage and records its wall time (stored in the `windows` audit table)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, fn, *args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds[name] = time.perf_counter() - start


def resolve_config(config: str | None, network: str | None, overrides: list[str] | None = None) -> GauntletConfig:
    """A network folder's own config.toml, else a TOML file, else the default preset; on a
    bittensor chain the validator's hotkey comes from its wallet."""
    path = Path(network) / "config.toml" if network else (Path(config) if config else None)
    return with_identity(load_config(path, overrides=overrides or ()))


def score_in_chunks(config_json: str, window: int, plan, records, chosen: list[int], chunk: int,
                    gpu: bool = False) -> Evaluation:
    """Fan scoring out over coarse chunks of peers (one task per chunk, not per peer).

    With several chunks, L_rand_before is computed once and handed to each. Chunks go to the
    flow's task runner: threads on one machine, Dask workers when the flow runs
    with a DaskTaskRunner (`with_task_runner`); `gpu` routes them to workers with a GPU resource.
    """
    chunks = [chosen[i:i + chunk] for i in range(0, len(chosen), chunk)] or [[]]
    rand_before = t.baseline(config_json, window, plan) if len(chunks) > 1 else None  # L_rand_before once
    with dask.annotate(resources={"GPU": 1}) if gpu else nullcontext():
        futures = [t.score.submit(config_json, window, plan, records, uids,
                                  f"peers-{uids[0] if uids else 0}-{len(uids)}", rand_before)
                   for uids in chunks]
    parts = [f.result() for f in futures]
    return Evaluation({u: l for p in parts for u, l in p.losses.items()},
                      {u: s for p in parts for u, s in p.scores.items()})


@flow(name="validate-window", flow_run_name="window-{window}", log_prints=True)
def validate_window(window: int, config: str | None = None, network: str | None = None,
                    rerun: bool = False, force_weights: bool = False, overrides: list[str] | None = None) -> dict:
    """Validate one closed training window; a window already in the audit tables is skipped
    unless `rerun` (then its rows are replaced and weights are set again only if `force_weights`).
    `overrides` are `section.field=value` settings on top of the config (e.g. scoring.device=cuda)."""
    cfg = resolve_config(config, network, overrides)
    if AuditStore(cfg.audit.root).has_window(window) and not rerun:
        get_run_logger().info("window %s is already validated; pass rerun=True to recompute it", window)
        return {"window": window, "skipped": True}
    cj = cfg.model_dump_json()
    run = StageClock()
    state = run("restore", t.restore, cj, window)
    plan = run("clock", t.clock, cj, window)
    records = run("fetch", t.fetch, cj, window, plan)
    filtered, verdicts, chosen = run("filter", t.filter_peers, cj, window, plan, records, state)
    evaluation = run("score", score_in_chunks, cj, window, plan, records, chosen, cfg.scoring.chunk_peers,
                     cfg.scaleout.gpu_resource)
    rated = run("ratings", t.ratings, cj, window, state, verdicts, filtered, evaluation)
    gather, stepped, before, after = run("aggregate", t.aggregate, cj, window, plan, records, filtered.accepted, state)
    chain_result = run("chain", t.set_weights, cj, window, rated, force_weights, rerun)
    done = Computed(filtered, verdicts, chosen, evaluation, rated, gather, stepped, before, after)
    run("audit", t.audit, cj, window, plan, records, done, chain_result, run.seconds, rerun)
    report.window_artifacts(window, verdicts, evaluation, rated, gather, chain_result)
    events.emit_window_events(window, [v.row() for v in verdicts.values()], rated.weights, chain_result,
                              {u: f.action for u, f in filtered.copies.items()}, gather, cfg.validator.hotkey)
    return {"window": window, "skipped": False, "weights": rated.weights, "gather": gather}


def with_task_runner(cfg: GauntletConfig):
    """The window flow with the task runner the config asks for (threads, or a Dask cluster)."""
    if not cfg.scaleout.dask_address:
        return validate_window
    return validate_window.with_options(task_runner=DaskTaskRunner(address=cfg.scaleout.dask_address))
