"""`gauntlet`: one command line over the core, the audit store, the local network and the flows.

Each part registers its own subcommands (`register(subparsers)`); this module only wires them,
sets up logging and turns known errors into a one-line message and exit status 2. The installed
`gauntlet` command is `flows.cli:main`, which adds the Prefect commands (the core never imports
the flows layer); `python -m gauntlet.cli` offers the core's commands alone.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from gauntlet import commands, prepare
from gauntlet.audit import cli as audit_cli
from gauntlet.config import ConfigError, load_config
from gauntlet.localnet import cli as localnet_cli


def _config_show(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, preset=args.preset, overrides=args.set or ())
    print(cfg.model_dump_json(indent=2))
    return 0


def _register_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print the resolved configuration (preset, file, env, --set)")
    p.add_argument("--config", help="a TOML file")
    p.add_argument("--preset", choices=["paper", "default"])
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE")
    p.set_defaults(func=_config_show)


Registrar = Callable[[argparse._SubParsersAction], None]
CORE: tuple[Registrar, ...] = (_register_config, prepare.register, audit_cli.register, localnet_cli.register,
                               commands.register)


def build_parser(extra: Sequence[Registrar] = ()) -> argparse.ArgumentParser:
    """The core's commands plus `extra` ones (the flows layer adds validate, follow, demo, serve)."""
    parser = argparse.ArgumentParser(prog="gauntlet", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in (*CORE, *extra):
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None, extra: Sequence[Registrar] = ()) -> int:
    parser = build_parser(extra)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"gauntlet: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
