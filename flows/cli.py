"""The installed `gauntlet` command: the core's commands plus the Prefect ones.

`validate`, `follow` and `demo` run flows (Prefect's temporary local API unless PREFECT_API_URL
points at a server). The deployments are served by `python -m deployments.serve`.

Prefect, torch and the flows are imported inside the handlers, never at the top: every other
command must start in well under a second (see gauntlet/cli.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from gauntlet import cli as core_cli

COMMANDS = (
    core_cli.Command("validate", "validate one window as a Prefect flow run", "flows.cli:register"),
    core_cli.Command("follow", "follow the chain: validate each window as it closes", "flows.cli:register"),
    core_cli.Command("demo", "run a local network end to end and show who got paid and why", "flows.cli:register"),
)


def _quiet_flows():
    """A flow's heartbeat thread costs about 1 s per (sub)flow run; short CLI runs skip it."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def _overrides(args: argparse.Namespace) -> list[str]:
    return [*(args.set or []), *([f"scoring.device={args.device}"] if args.device else [])]


def _validate(args: argparse.Namespace) -> int:
    from flows.validate import resolve_config, with_task_runner

    flow = with_task_runner(resolve_config(args.config, args.network, _overrides(args)))
    with _quiet_flows():
        out = flow(window=args.window, config=args.config, network=args.network,
                   rerun=args.rerun, force_weights=args.force_weights, overrides=_overrides(args))
    print(out if out.get("skipped") else f"window {args.window} validated; aggregated {out['gather']}")
    return 0


def _follow(args: argparse.Namespace) -> int:
    from flows.follow import follow_chain

    done = follow_chain(config=args.config, network=args.network, max_windows=args.max_windows,
                        catch_up=args.catch_up, idle_timeout_s=args.idle_timeout, overrides=_overrides(args))
    print(f"validated windows {done}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from flows.localnet import LOG_NAME, run_demo

    with _quiet_flows():
        print(run_demo(args.windows, args.peers, Path(args.network), args.resume))
    print(f"Prefect's log of this run: {Path(args.network) / LOG_NAME}")
    return 0


def _source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a TOML config file")
    p.add_argument("--network", help="a local network folder (uses its config.toml)")
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE", help="override a setting (repeatable)")
    p.add_argument("--device", help="scoring device: auto, cpu, cuda, cuda:N (same as --set scoring.device=...)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `validate`, `follow` and `demo`."""
    p = sub.add_parser("validate", help=COMMANDS[0].help)
    p.add_argument("--window", type=int, required=True, help="the window to validate")
    p.add_argument("--rerun", action="store_true", help="recompute a window already validated")
    p.add_argument("--force-weights", action="store_true", help="set weights on chain even if not due")
    _source(p)
    p.set_defaults(func=_validate)
    p = sub.add_parser("follow", help=COMMANDS[1].help)
    p.add_argument("--max-windows", type=int, help="stop after validating this many windows (default: never)")
    p.add_argument("--catch-up", type=int, default=0, help="a new validator starts this many windows back")
    p.add_argument("--idle-timeout", type=float, help="stop after this many seconds without a new window")
    _source(p)
    p.set_defaults(func=_follow)
    p = sub.add_parser("demo", help=COMMANDS[2].help,
                       description="Mine and validate WINDOWS windows of a local network with honest and hostile "
                       "peers, then print who got paid and why, the validation loss and a chart. A network "
                       "already in --network is kept under a dated name, or continued with --resume.")
    p.add_argument("--windows", type=int, default=10, help="windows to mine and validate (default 10)")
    p.add_argument("--peers", type=int, default=27, help="peers in the default mix (27: every hostile kind)")
    p.add_argument("--network", default="data/localnet", help="the network folder (default data/localnet)")
    p.add_argument("--resume", action="store_true", help="continue the network in --network instead of a new one")
    p.set_defaults(func=_demo)


def main(argv: Sequence[str] | None = None) -> int:
    # A validator often runs without internet: Prefect's temporary server should not phone home
    # (an explicit PREFECT_SERVER_ANALYTICS_ENABLED wins).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return core_cli.main(argv, extra=COMMANDS)


if __name__ == "__main__":
    sys.exit(main())
