"""Core commands that need no orchestrator: `replay` and `status` (direct, exit status 0/1/2).

`replay`: 0 when every window is reproduced (or for a what-if), 1 when a recorded value differs,
2 when the replay is refused (range, pruned inputs, bad setting). `status`: 0 healthy, 1 behind
(a health check), 2 no config. What they run (torch for replays) is imported by the handlers,
not here (see gauntlet/cli.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gauntlet import replay_report

HELP = "recompute recorded windows from their stored inputs (what-if with --set)"
STATUS_HELP = "is the validator healthy and caught up? (exit 1 when behind: a health check)"


JOIN_HELP = "start at window W of a running network from a trusted validator's published checkpoint"


def _fail(message: str, command: str = "replay") -> int:
    print(f"gauntlet {command}: {message}", file=sys.stderr)
    return 2


def _replay(args: argparse.Namespace) -> int:
    first = args.window if args.window is not None else args.first
    last = args.window if args.window is not None else args.last
    if first is None or last is None:
        return _fail("give --window W, or --first A --last B")
    if not Path(args.root).is_dir():
        return _fail(f"audit root {args.root} does not exist (set --root)")
    from gauntlet.audit.store import AuditStore

    store = AuditStore(args.root)
    recorded = store.windows()
    try:
        never = replay_report.check_range(first, last, recorded, args.root)
    except replay_report.RangeRefused as exc:
        return _fail(str(exc))
    return _run(args, store, [w for w in recorded if first <= w <= last], never)


def _run(args: argparse.Namespace, store, windows: list[int], never: list[int]) -> int:
    from gauntlet.config import ConfigError
    from gauntlet.replay import InputsGone, render_reports, replay_range

    overrides = [*([f"preset={args.preset}"] if args.preset else []), *(args.set or ())]
    done: list[int] = []

    def progress(report, n: int, total: int) -> None:
        done.append(report.window)
        print(replay_report.progress_line(report, n, total, bool(overrides)), file=sys.stderr, flush=True)

    try:
        reports = replay_range(store, windows[0], windows[-1], overrides, progress=progress)
    except InputsGone as exc:
        return _fail(replay_report.pruned(next((w for w in windows if w not in done), None), exc))
    except ConfigError as exc:
        return _fail(str(exc))
    print(replay_report.summary(reports, overrides, replay_report.network_behaviours(args.root), never))
    if args.details:
        print("\n" + render_reports(reports, bool(overrides)))
    return 0 if overrides or all(r.identical for r in reports) else 1


def register(sub: argparse._SubParsersAction) -> None:
    """Add `gauntlet replay`."""
    p = sub.add_parser("replay", help=HELP, description=(
        "Recompute recorded windows from their stored inputs (the archived peer files, the checkpoint, the "
        "recorded state) and compare every value with the audit tables; with --set, replay under another "
        "setting and show how the weights would have moved. Progress goes to stderr, a summary to stdout."))
    p.add_argument("--root", default="data/localnet/audit", help="audit root (default: %(default)s)")
    p.add_argument("--window", type=int, help="replay this one window")
    p.add_argument("--first", type=int, help="first window of a range (with --last)")
    p.add_argument("--last", type=int, help="last window of a range (with --first)")
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="replay under another setting and show how the weights would differ (repeatable)")
    p.add_argument("--preset", choices=["paper", "default", "templar-2026"],
                   help="replay under another rule set (the network's paths, model and own thresholds stay) and "
                        "show how the weights would differ and which rules made the difference")
    p.add_argument("--details", action="store_true",
                   help="after the summary, every differing value (or each window's weights for a what-if)")
    p.set_defaults(func=_replay)


def _config_path(args: argparse.Namespace) -> tuple[Path, str | None]:
    """The config a `--config FILE` / `--network FOLDER` pair names, and what is wrong with it."""
    path = Path(args.config) if args.config else Path(args.network) / "config.toml"
    if path.is_file():
        return path, None
    what = f"config file {path} does not exist" if args.config else f"{args.network} holds no network ({path} is missing)"
    return path, f"{what}; give --config FILE (a validator's TOML) or --network FOLDER"


def _source_arguments(p: argparse.ArgumentParser, config_help: str) -> None:
    source = p.add_mutually_exclusive_group()
    source.add_argument("--config", help=config_help)
    source.add_argument("--network", default="data/localnet",
                        help="a local network folder, read through its config.toml (default: %(default)s)")
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE", help="override a setting (repeatable)")


def _status(args: argparse.Namespace) -> int:
    path, problem = _config_path(args)
    if problem:
        return _fail(problem, "status")
    from gauntlet.config import load_config
    from gauntlet.status import run_status

    text, code = run_status(load_config(path, overrides=args.set or ()), as_json=args.json, last_n=args.last)
    print(text)
    return code


def register_status(sub: argparse._SubParsersAction) -> None:
    """Add `gauntlet status`."""
    p = sub.add_parser("status", help=STATUS_HELP, description=(
        "One screen on a validator: the chain's window, the last window validated and the lag, the last "
        "weights and the chain's answer, failed windows, peers by verdict. Reads the chain and the audit "
        "tables only. Exit status 0 when at most validator.max_lag_windows behind, else 1."))
    _source_arguments(p, "a validator's TOML config file")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--last", type=int, default=10, help="recent windows to summarise (default: %(default)s)")
    p.set_defaults(func=_status)


def _join(args: argparse.Namespace) -> int:
    path, problem = _config_path(args)
    if problem:
        return _fail(problem, "join")
    from gauntlet.config import load_config
    from gauntlet.identity import with_identity
    from gauntlet.join import JoinError, join

    try:
        got = join(with_identity(load_config(path, overrides=args.set or ())), args.window, args.source)
    except JoinError as exc:
        return _fail(str(exc), "join")
    print(f"joined at window {got.window} from {got.source}: checkpoint {got.checkpoint} "
          f"(sha256 {got.checkpoint_hash[:12]}, checked), state of {got.peers} peers; "
          f"next: gauntlet follow --catch-up 0 with the same config")
    return 0


def register_join(sub: argparse._SubParsersAction) -> None:
    """Add `gauntlet join`."""
    p = sub.add_parser("join", help=JOIN_HELP, description=(
        "Start a validator at window W of a running network: fetch the checkpoint theta_W and the state W "
        "starts from, as published by a validator you trust, check the checkpoint's hash against its "
        "published record, and keep both in this validator's workdir."))
    _source_arguments(p, "this validator's TOML config file")
    p.add_argument("--window", type=int, required=True, help="the first window this validator will validate")
    p.add_argument("--from", dest="source", required=True, metavar="HOTKEY",
                   help="hotkey of the validator to take the checkpoint and state from")
    p.set_defaults(func=_join)
