"""`follow-chain`: wait for each window to close and validate it, catching up after a restart.

The next window to validate comes from the audit tables (the newest validated window + 1), so a
restarted validator resumes where it stopped and never validates a window twice unless asked.

A run that finds nothing new must be cheap: a scheduled deployment starts one every interval
for months. So this module imports only the config, the chain and the audit store; the window
flow (torch, the model, Dask) is imported the first time there is a window to validate.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from gauntlet.audit.store import AuditStore
from gauntlet.chain import Chain, open_chain
from gauntlet.clock import closed_window
from gauntlet.config import GauntletConfig, load_config
from gauntlet.retention import prune
from gauntlet.status import collect, render
from tasks.limits import window_lock
from tasks.secrets import secrets_to_env



def light_config(config: str | None, network: str | None, overrides: list[str] | None) -> GauntletConfig:
    """The settings the idle check needs (chain, audit root, scale-out), from the same sources
    as `flows.validate.resolve_config` but without resolving the wallet's hotkey, which imports
    the validator's torch-heavy modules."""
    path = Path(network) / "config.toml" if network else (Path(config) if config else None)
    return load_config(path, overrides=overrides or ())


def next_window(store: AuditStore, ready: int, start_window: int, catch_up: int) -> int:
    """After the newest validated window; a new validator starts `catch_up` windows back."""
    done = store.windows()
    if done:
        return max(done) + 1
    return max(start_window, ready - catch_up)


def validate_one(cfg: GauntletConfig, chain: Chain, window: int, config: str | None, network: str | None,
                 overrides: list[str] | None) -> bool:
    """Validate `window` under the lock (`tasks.limits.WINDOW_LOCK`); False if another run
    validated it while this one waited. The window flow, a subflow here, leaves the lock to us."""
    with window_lock():
        if AuditStore(cfg.audit.root).has_window(window):
            return False
        from flows.validate import with_task_runner  # torch and the model: only now that there is work

        with_task_runner(cfg)(window=window, config=config, network=network, overrides=overrides)
    apply_retention(cfg, window + 1)
    publish_status(cfg, chain, window)
    return True


def publish_status(cfg: GauntletConfig, chain: Chain, window: int) -> None:
    """`gauntlet status` as the `validator-status` artifact, so the UI shows it after each window."""
    status = collect(cfg, chain, AuditStore(cfg.audit.root))
    create_markdown_artifact(key="validator-status", markdown="```\n" + render(status) + "\n```",
                             description=f"Validator status after window {window}")


def apply_retention(cfg: GauntletConfig, next_window: int) -> None:
    """Prune old checkpoints and archives (`retention.*`); a refusal is logged, never fails the
    window that was just validated."""
    log = get_run_logger()
    try:
        pruned = prune(cfg.validator.workdir, cfg.retention.keep_checkpoints, cfg.retention.keep_archive_windows,
                       next_window)
    except FileNotFoundError as exc:
        log.warning("retention skipped: %s", exc)
        return
    if pruned.checkpoints or pruned.archives:
        log.info("retention: deleted checkpoints of windows %s and archives of windows %s (%.1f MB)",
                 pruned.checkpoints, pruned.archives, pruned.bytes_freed / 1e6)


@flow(name="follow-chain", log_prints=True)
def follow_chain(config: str | None = None, network: str | None = None, poll_s: float = 6.0,
                 max_windows: int | None = None, catch_up: int = 0, idle_timeout_s: float | None = None,
                 overrides: list[str] | None = None) -> list[int]:
    """Validate windows as the chain closes them; stop after `max_windows` or `idle_timeout_s`."""
    log = get_run_logger()
    filled = secrets_to_env()
    if filled:
        log.info("settings from Secret blocks: %s", ", ".join(filled))
    cfg = light_config(config, network, overrides)
    chain, store = open_chain(cfg.chain), AuditStore(cfg.audit.root)
    done: list[int] = []
    idle_since = time.monotonic()
    while max_windows is None or len(done) < max_windows:
        ready = closed_window(chain.block(), cfg.chain)
        window = None if ready is None else next_window(store, ready, cfg.chain.start_window, catch_up)
        if window is not None and window <= ready:
            if validate_one(cfg, chain, window, config, network, overrides):
                done.append(window)
            idle_since = time.monotonic()
            continue
        if idle_timeout_s is not None and time.monotonic() - idle_since > idle_timeout_s:
            log.info("no new window for %.0f s; stopping", idle_timeout_s)
            break
        time.sleep(poll_s)
    return done
