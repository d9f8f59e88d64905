"""`gauntlet`: one command line over the core, the audit store, the local network and the flows.

The installed `gauntlet` command is `flows.cli:main`, which adds the Prefect commands (the core
never imports the flows layer); `python -m gauntlet.cli` offers the core's commands alone.

Start-up is the design constraint here: importing torch, transformers, prefect and bittensor
costs about 9 s, and `gauntlet --help`, `audit`, `explain` or `config` need none of them. So this
is the one place where deferred imports are the rule, not the exception: the command table below
names each command, its one-line help and *where* its parser is defined ("module:function"), and
only the module of the command being run is imported. `gauntlet --help` builds cheap stand-ins
from the table; each command module keeps its own heavy imports inside the handler that needs them.
`tests/test_startup.py` pins which commands must start without torch, prefect or bittensor.

Errors: a known error (bad config, missing file) is one line on stderr and exit status 2; a
mistyped command or choice gets a "did you mean"; a closed pipe (`gauntlet config | head -1`)
ends quietly.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Command:
    """A subcommand as `gauntlet --help` lists it, and the "module:function" that defines its
    parser (called with the subparsers object; one function may define several commands)."""

    name: str
    help: str
    register: str


CORE: tuple[Command, ...] = (
    Command("config", "print the resolved configuration (preset, file, env, --set)", "gauntlet.cli:register_config"),
    Command("data", "local corpus and tokenizer", "gauntlet.prepare:register"),
    Command("audit", "read-only SQL over the audit tables (DuckDB)", "gauntlet.audit.cli:register"),
    Command("explain", "why a peer got what it got in one window, in plain words", "gauntlet.audit.cli:register"),
    Command("localnet", "a local network: chain ledger, buckets, honest and hostile miners",
            "gauntlet.localnet.cli:register"),
    Command("replay", "recompute recorded windows from their stored inputs (what-if with --set)",
            "gauntlet.commands:register"),
    Command("status", "is the validator healthy and caught up? (exit 1 when behind: a health check)",
            "gauntlet.commands:register_status"),
    Command("join", "start at window W of a running network from a trusted validator's published checkpoint",
            "gauntlet.commands:register_join"),
)
"""The core's commands, in the order `gauntlet --help` lists them."""


class Parser(argparse.ArgumentParser):
    """argparse with a "did you mean" for a mistyped command or choice (`gauntlet adit`)."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:  # argparse's choice check
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError as exc:
            close = difflib.get_close_matches(str(value), [str(c) for c in action.choices or ()], n=1)
            if not close:
                raise
            raise argparse.ArgumentError(action, f"{exc.message}; did you mean {close[0]!r}?") from None


def _resolve(target: str) -> Callable[[argparse._SubParsersAction], None]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _describe(parser: argparse.ArgumentParser) -> None:
    """A subcommand without a description gets its one-line help as one, at every level, so
    `gauntlet <cmd> --help` always says what the command does."""
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        helps = {a.dest: a.help for a in action._choices_actions}
        for name, child in action.choices.items():
            if child.description is None:
                child.description = helps.get(name)
            _describe(child)


def build_parser(extra: Sequence[Command] = (), real: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The core's commands plus `extra` ones (the flows layer adds validate, follow, demo).

    Only the commands named in `real` (None: all) get their real parser, which imports their
    module; the others are stand-ins that carry their name and help for `--help` and "did you mean".
    """
    commands = (*CORE, *extra)
    parser = Parser(prog="gauntlet", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = [c.register for c in commands if real is None or c.name in real]
    for register in dict.fromkeys(wanted):
        _resolve(register)(sub)
    for command in commands:
        if command.name not in sub.choices:
            sub.add_parser(command.name, help=command.help)
    _describe(parser)
    return parser


def _command_word(argv: Sequence[str]) -> str | None:
    """The subcommand: the first word that is not an option (the top level has only flags)."""
    return next((word for word in argv if not word.startswith("-")), None)


def _known_errors() -> tuple[type[Exception], ...]:
    from gauntlet.config import ConfigError  # pydantic: imported once an error needs naming

    return ConfigError, FileNotFoundError


def _dispatch(argv: Sequence[str], extra: Sequence[Command]) -> int:
    args = build_parser(extra, real={_command_word(argv)}).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        if not isinstance(exc, _known_errors()):
            raise
        print(f"gauntlet: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None, extra: Sequence[Command] = ()) -> int:
    """Run one command; a reader that closes the pipe early ends it quietly (Python's documented
    recipe: point stdout at devnull so the interpreter's last flush cannot fail again)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            return _dispatch(argv, extra)
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


# `gauntlet config`


def _config_show(args: argparse.Namespace) -> int:
    from gauntlet.config_docs import explain_config, traced_config

    cfg, origins = traced_config(args.config, preset=args.preset, overrides=args.set or ())
    text = explain_config(cfg, origins) if args.explain else cfg.model_dump_json(indent=2)
    sys.stdout.write(text.rstrip("\n") + "\n")
    return 0


def register_config(sub: argparse._SubParsersAction) -> None:
    """Add `gauntlet config`."""
    p = sub.add_parser("config", help="print the resolved configuration (preset, file, env, --set)",
                       description="Print the configuration as resolved from the preset, then the TOML file, "
                                   "then GAUNTLET_<SECTION>__<FIELD> variables, then --set (later ones win).")
    p.add_argument("--config", help="a TOML config file")
    p.add_argument("--preset", choices=["paper", "default", "templar-2026"], help="start from this preset (default: the file's, "
                                                                  "else default)")
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE", help="override a setting (repeatable)")
    p.add_argument("--explain", action="store_true", help="every setting, one a line, with what it means")
    p.set_defaults(func=_config_show)


if __name__ == "__main__":
    sys.exit(main())
