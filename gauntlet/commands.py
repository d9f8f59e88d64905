"""Core commands that need no orchestrator: `replay` (direct, exit status 0/1/2)."""

from __future__ import annotations

import argparse
import sys

from gauntlet.audit.store import AuditStore
from gauntlet.config import ConfigError
from gauntlet.replay import InputsGone, render_reports, replay_range


def _replay(args: argparse.Namespace) -> int:
    first = args.window if args.window is not None else args.first
    last = args.window if args.window is not None else args.last
    if first is None or last is None:
        print("gauntlet replay: give --window W, or --first A --last B", file=sys.stderr)
        return 2
    try:
        reports = replay_range(AuditStore(args.root), first, last, args.set or ())
    except InputsGone as exc:
        print(f"gauntlet replay: inputs are gone: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"gauntlet replay: {exc}", file=sys.stderr)
        return 2
    print(render_reports(reports, bool(args.set)))
    return 0 if args.set or all(r.identical for r in reports) else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="recompute recorded windows from their stored inputs (what-if with --set)")
    p.add_argument("--root", default="data/localnet/audit", help="audit root (default: %(default)s)")
    p.add_argument("--window", type=int)
    p.add_argument("--first", type=int)
    p.add_argument("--last", type=int)
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="replay under another setting and show how the weights would differ")
    p.set_defaults(func=_replay)
