"""The Prefect deployments, served by one long-running process (`gauntlet serve`).

- `follow-chain/validator`: the chain-following validator (one long run; catches up after restarts);
- `follow-chain/scheduled`: the same on an interval schedule: each run validates every window
  that has closed since the last and exits (for operators who prefer short runs); the interval
  is a window but at least `MIN_INTERVAL_S`, and a run that finds nothing new imports no torch;
- `validate-window/rerun`: validate or recompute one window (`-p window=N -p rerun=true`), the
  deployment the UI's Run button and `prefect deployment run` use for reruns;
- `replay/replay`: retrospective replays and what-ifs;
- `localnet/localnet`: the local network (miners and validator) for demos.

One window at a time: `follow-chain/validator` queues a second run behind the first (ENQUEUE);
a scheduled or rerun trigger that arrives while one of its deployment's runs is active is
cancelled (CANCEL_NEW); and every follow-chain run, and every rerun, validates under one
global slot (`tasks.limits.WINDOW_LOCK`, created by `deployments.limits`), so two deployments
never validate a window at the same time.

Parameters are validated by Prefect against the flows' signatures before a run starts.
`prefect.yaml` beside this file declares the same deployments for `prefect deploy` + a worker.
"""

from __future__ import annotations

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

from deployments.automations import apply, definitions
from deployments.limits import ensure_limits
from flows.follow import follow_chain
from flows.localnet import localnet
from flows.replay import replay
from flows.validate import resolve_config, validate_window

FOLLOW_LIMIT = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
"""The long follow run: a second one waits for the first to end rather than being dropped."""
TRIGGER_LIMIT = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)
"""Schedules and reruns: a trigger while one is active is redundant, so it is cancelled."""
MIN_INTERVAL_S = 60.0
"""A schedule every 8 s (a local window) made 365 idle runs in 35 minutes; a run catches up on
every closed window anyway, so a minute between runs loses nothing."""


def schedule_interval_s(cfg) -> float:
    """One window (`blocks_per_window * block_time_s`), but never less than `MIN_INTERVAL_S`."""
    return max(cfg.chain.blocks_per_window * cfg.chain.block_time_s, MIN_INTERVAL_S)


def deployments(config: str | None = None, network: str | None = None) -> list:
    cfg = resolve_config(config, network)
    source = {"config": config, "network": network}
    return [
        follow_chain.to_deployment(name="validator", parameters=source, concurrency_limit=FOLLOW_LIMIT),
        follow_chain.to_deployment(name="scheduled", interval=schedule_interval_s(cfg),
                                   parameters={**source, "idle_timeout_s": 0.0},
                                   concurrency_limit=TRIGGER_LIMIT),
        validate_window.to_deployment(name="rerun", parameters=source, concurrency_limit=TRIGGER_LIMIT),
        replay.to_deployment(name="replay", parameters={"root": cfg.audit.root}),
        localnet.to_deployment(name="localnet"),
    ]


def serve_all(config: str | None = None, network: str | None = None) -> None:
    """Create the window lock, the bucket-read rate limit and the alerts (all idempotent), then
    serve until stopped."""
    cfg = resolve_config(config, network)
    ensure_limits(cfg=cfg)
    apply(definitions(cfg))
    serve(*deployments(config, network))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config")
    parser.add_argument("--network")
    args = parser.parse_args()
    serve_all(args.config, args.network)
