"""The Prefect deployments, served by one long-running process (`gauntlet serve`).

- `follow-chain/validator`: the chain-following validator (one long run; catches up after restarts);
- `follow-chain/scheduled`: the same on an interval schedule: each run validates every window
  that has closed since the last and exits (for operators who prefer short runs);
- `validate-window/rerun`: validate or recompute one window (`-p window=N -p rerun=true`), the
  deployment the UI's Run button and `prefect deployment run` use for reruns;
- `replay/replay`: retrospective replays and what-ifs;
- `localnet/localnet`: the local network (miners and validator) for demos.

Parameters are validated by Prefect against the flows' signatures before a run starts.
`prefect.yaml` beside this file declares the same deployments for `prefect deploy` + a worker.
"""

from __future__ import annotations

from prefect import serve

from flows.follow import follow_chain
from flows.localnet import localnet
from flows.replay import replay
from flows.validate import resolve_config, validate_window


def deployments(config: str | None = None, network: str | None = None) -> list:
    cfg = resolve_config(config, network)
    window_s = cfg.chain.blocks_per_window * cfg.chain.block_time_s
    source = {"config": config, "network": network}
    return [
        follow_chain.to_deployment(name="validator", parameters=source),
        follow_chain.to_deployment(name="scheduled", interval=window_s,
                                   parameters={**source, "idle_timeout_s": 0.0}),
        validate_window.to_deployment(name="rerun", parameters=source),
        replay.to_deployment(name="replay", parameters={"root": cfg.audit.root}),
        localnet.to_deployment(name="localnet"),
    ]


def serve_all(config: str | None = None, network: str | None = None) -> None:
    serve(*deployments(config, network))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config")
    parser.add_argument("--network")
    args = parser.parse_args()
    serve_all(args.config, args.network)
