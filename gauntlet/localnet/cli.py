"""`gauntlet localnet init` and `gauntlet localnet run`: a whole network on one machine.

`run --validate` runs the direct validator (gauntlet/window/pipeline.py) in the same process after
each window, for every window that became ready; its state is rebuilt from the network's audit
tables, so runs can be repeated and carry on. Without `--validate` only the miners run (a
validator flow can follow the same chain and buckets from another process).

The simulator and the validator (torch) are imported by the handlers, not here (see gauntlet/cli.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from gauntlet.config import DataConfig
from gauntlet.localnet.network import DEFAULT_FOLDER, HOSTILE_ORDER, Network, init_network, load_network, parse_mix

if TYPE_CHECKING:
    from gauntlet.localnet.simulate import MinerReport


def _init(args: argparse.Namespace) -> int:
    behaviours = parse_mix(args.behaviours) if args.behaviours else None
    try:
        net = init_network(args.network, peers=args.peers, behaviours=behaviours, seed=args.seed, force=args.force,
                           corpus=args.corpus, tokenizer=args.tokenizer, overrides=args.set or ())
    except (FileExistsError, ValueError) as exc:
        print(f"gauntlet localnet init: {exc}", file=sys.stderr)
        return 2
    print(f"network in {net.folder}: validator uid {net.validator.uid}, {len(net.peers)} peers")
    for peer in net.peers:
        print(f"  uid {peer.uid:3d}  {peer.hotkey}  {peer.behaviour}")
    print(f"config {net.config_path}; next: gauntlet localnet run --windows 3 --network {args.network}")
    return 0


def _validator(net: Network) -> tuple[Callable[[int], None], int | None]:
    """The direct validator over the network's folder (its state carried across calls), and the
    first window it has not validated yet (None: it never ran)."""
    from gauntlet.audit.store import AuditStore
    from gauntlet.state import restore_state
    from gauntlet.window.pipeline import Direct, validate_window

    cfg = net.config
    state = restore_state(AuditStore(cfg.audit.root))

    def validate(window: int) -> None:
        validate_window(Direct(), cfg, window)
        print(f"  validated window {window}")

    return validate, None if state.last_window is None else state.last_window + 1


def _run(args: argparse.Namespace) -> int:
    from gauntlet.localnet.simulate import run_network

    net = load_network(args.network)
    validate, start = _validator(net) if args.validate else (None, None)

    def show(report: MinerReport) -> None:
        print(report.summary())
        refused = {u: r for u, r in report.verdicts.items() if r != "ok"}
        if refused:
            print("  refused by stage 1: "
                  + ", ".join(f"uid {u} ({net.behaviour_of(u)}) {r}" for u, r in sorted(refused.items())))

    run_network(net, args.windows, validate, validate_from=start, on_report=show)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `localnet init` and `localnet run` to the CLI's subcommands."""
    p = sub.add_parser("localnet", help="a local network: chain ledger, buckets, honest and hostile miners")
    lsub = p.add_subparsers(dest="localnet_command", required=True)
    init = lsub.add_parser("init", help="create a network folder",
                           description="Create a network folder: chain ledger, one bucket per peer, the data "
                                       "(built if missing), config.toml and the manifest of behaviours.")
    init.add_argument("--network", type=Path, default=DEFAULT_FOLDER, help="network folder (default: %(default)s)")
    init.add_argument("--peers", type=int, default=None,
                      help="number of peers in the default mix: at least 40%% honest, then one of each hostile "
                           f"kind in this order while they fit: {', '.join(HOSTILE_ORDER)} (default: 12)")
    init.add_argument("--behaviours", metavar="MIX",
                      help="e.g. honest=8,copycat=1,sybil=2, in uid order (must total --peers if both are given)")
    init.add_argument("--seed", type=int, default=0, help="seed of the hostile behaviours' randomness")
    data = DataConfig()
    init.add_argument("--corpus", type=Path, default=Path(data.corpus),
                      help="corpus folder, built by `gauntlet data prepare` if missing (default: %(default)s)")
    init.add_argument("--tokenizer", type=Path, default=Path(data.tokenizer),
                      help="tokenizer folder, built with the corpus if missing (default: %(default)s)")
    init.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                      help="change a setting of the network's config.toml (repeatable)")
    init.add_argument("--force", action="store_true", help="replace an existing network in the folder")
    init.set_defaults(func=_init)
    run = lsub.add_parser("run", help="run the miners for some windows (and the validator with --validate)",
                          description="Run the network's miners, honest and hostile, for some windows on the "
                                      "local chain; with --validate the direct validator follows each window.")
    run.add_argument("--windows", type=int, required=True, help="number of windows to run")
    run.add_argument("--network", type=Path, default=DEFAULT_FOLDER, help="network folder (default: %(default)s)")
    run.add_argument("--validate", action="store_true",
                     help="run the direct validator on each window as it becomes ready")
    run.set_defaults(func=_run)
