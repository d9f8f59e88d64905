"""`follow-chain`: wait for each window to close and validate it, catching up after a restart.

The next window to validate comes from the audit tables (the newest validated window + 1), so a
restarted validator resumes where it stopped and never validates a window twice unless asked.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger

from gauntlet.audit.store import AuditStore
from gauntlet.chain import open_chain
from gauntlet.clock import closed_window
from flows.validate import resolve_config, with_task_runner


def next_window(store: AuditStore, ready: int, start_window: int, catch_up: int) -> int:
    """After the newest validated window; a new validator starts `catch_up` windows back."""
    done = store.windows()
    if done:
        return max(done) + 1
    return max(start_window, ready - catch_up)


@flow(name="follow-chain", log_prints=True)
def follow_chain(config: str | None = None, network: str | None = None, poll_s: float = 6.0,
                 max_windows: int | None = None, catch_up: int = 0, idle_timeout_s: float | None = None,
                 overrides: list[str] | None = None) -> list[int]:
    """Validate windows as the chain closes them; stop after `max_windows` or `idle_timeout_s`."""
    cfg = resolve_config(config, network, overrides)
    chain, store, log = open_chain(cfg.chain), AuditStore(cfg.audit.root), get_run_logger()
    done: list[int] = []
    idle_since = time.monotonic()
    while max_windows is None or len(done) < max_windows:
        ready = closed_window(chain.block(), cfg.chain)
        window = None if ready is None else next_window(store, ready, cfg.chain.start_window, catch_up)
        if window is not None and window <= ready:
            with_task_runner(cfg)(window=window, config=config, network=network, overrides=overrides)
            done.append(window)
            idle_since = time.monotonic()
            continue
        if idle_timeout_s is not None and time.monotonic() - idle_since > idle_timeout_s:
            log.info("no new window for %.0f s; stopping", idle_timeout_s)
            break
        time.sleep(poll_s)
    return done
