"""`gauntlet audit "SELECT ..."` and `gauntlet explain --uid U --window W`.

Both read the audit root (`audit.root` in the config, `data/localnet/audit` by default) and never
write to it. Exit status: 0 on success, 2 with one clear line on stderr otherwise (a refused
write, bad SQL, a window or uid with no rows, a missing root).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gauntlet.audit.explain import AuditLookupError, explain
from gauntlet.audit.query import FORMATS, QueryError, ReadOnlyError, format_frame, run_sql
from gauntlet.audit.schema import DESCRIPTIONS, SCHEMAS, TABLES, sql_type
from gauntlet.config import AuditConfig

DEFAULT_ROOT = AuditConfig().root

EXAMPLES = """examples:
  gauntlet audit "SELECT uid, avg(final_score) AS f FROM ratings
                  WHERE window_id > (SELECT max(window_id) FROM windows) - 100
                  GROUP BY uid ORDER BY f DESC LIMIT 10"
  gauntlet audit "SELECT window_id, stage, reason, detail FROM verdicts WHERE uid = 7 AND reason <> 'ok'"
  gauntlet audit --schema
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `audit` and `explain` commands to a subparsers object."""
    audit = sub.add_parser("audit", help="read-only SQL over the audit tables (DuckDB)", epilog=EXAMPLES,
                           description="Answer one read-only SQL statement over the audit tables (DuckDB views "
                                       "over the Parquet files; writes are refused). --schema lists the tables.",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    audit.add_argument("sql", nargs="?", help="one SELECT/WITH/DESCRIBE/SHOW/EXPLAIN statement")
    audit.add_argument("--root", default=DEFAULT_ROOT, help=f"audit folder (default {DEFAULT_ROOT})")
    audit.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")
    audit.add_argument("--schema", action="store_true", help="list the tables and their columns, then exit")
    audit.set_defaults(func=run_audit)

    why = sub.add_parser("explain", help="why a peer got what it got in one window, in plain words",
                         description="Tell one peer's story in one window from the audit tables: each check it "
                                     "passed or failed, its scores, rating and weight, and its recent history.")
    why.add_argument("--uid", type=int, required=True, help="the peer's uid")
    why.add_argument("--window", type=int, required=True, help="the window")
    why.add_argument("--root", default=DEFAULT_ROOT, help=f"audit folder (default {DEFAULT_ROOT})")
    why.add_argument("--history", type=int, default=5, help="previous windows to summarise (default 5)")
    why.set_defaults(func=run_explain)


def run_audit(args: argparse.Namespace) -> int:
    if args.schema:
        sys.stdout.write(describe())
        return 0
    if not args.sql:
        return _fail("give a SQL statement, e.g. gauntlet audit \"SELECT * FROM windows\", or --schema")
    if not Path(args.root).is_dir():
        return _fail(f"audit root {args.root} does not exist (set --root, or audit.root in the config)")
    try:
        frame = run_sql(args.root, args.sql)
    except (ReadOnlyError, QueryError) as exc:
        return _fail(str(exc))
    sys.stdout.write(format_frame(frame, args.format))
    return 0


def run_explain(args: argparse.Namespace) -> int:
    if not Path(args.root).is_dir():
        return _fail(f"audit root {args.root} does not exist (set --root, or audit.root in the config)")
    try:
        sys.stdout.write(explain(args.root, uid=args.uid, window=args.window, history=args.history))
    except (AuditLookupError, ValueError) as exc:
        return _fail(str(exc))
    return 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def describe(table: str | None = None) -> str:
    """Plain-text listing of the tables, their columns, types and meanings."""
    names = TABLES if table is None else (table,)
    lines: list[str] = []
    for name in names:
        if name not in SCHEMAS:
            raise KeyError(f"unknown audit table {name!r}; tables are {', '.join(TABLES)}")
        lines.append(f"{name}")
        for field in SCHEMAS[name]:
            null = "nullable" if field.nullable else ""
            lines.append(f"  {field.name:<22} {sql_type(field.type):<12} {null:<9} {DESCRIPTIONS[name][field.name]}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
