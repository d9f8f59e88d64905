"""Read-only SQL over the audit tables: DuckDB in memory, one view per table.

Each view is a lazy Arrow dataset over the table's Parquet files of completed windows (hive
partition `window_id`, typed int64), registered in DuckDB. DuckDB itself never opens a file:
the datasets read them, so the connection can run with `enable_external_access=false` and a
locked configuration, and then `COPY ... TO`, `ATTACH`, `INSTALL` and `read_csv('/etc/...')` fail
inside DuckDB whatever the statement looks like. (DuckDB's `read_parquet` views would need
`allowed_directories`, which grants writes to the audit folder as well as reads.) An empty table
is an empty dataset with the table's schema, so every view exists from the first window on.

Before that, DuckDB's own parser classifies the statement: one SELECT-like statement (SELECT,
WITH, FROM, DESCRIBE, SHOW, SUMMARIZE) or an EXPLAIN of one is run; anything else is refused.
"""

from __future__ import annotations

import io
import json
from collections.abc import Collection
from pathlib import Path

import duckdb
import polars as pl

from gauntlet.audit.schema import TABLES
from gauntlet.audit.store import AuditStore

FORMATS = ("table", "csv", "json")
_READ = duckdb.StatementType.SELECT
_LOCK = (
    "SET python_enable_replacements = false",  # no reading of Python variables that share a table's name
    "SET autoinstall_known_extensions = false",
    "SET autoload_known_extensions = false",
    "SET enable_external_access = false",
    "SET lock_configuration = true",
)
_HINT = "use one SELECT, WITH, FROM, DESCRIBE, SHOW, SUMMARIZE or EXPLAIN statement"


class ReadOnlyError(PermissionError):
    """A statement would write (files, tables, settings); the audit SQL is read-only."""


class QueryError(ValueError):
    """A statement is not valid SQL or failed (unknown column, bad type...)."""


def connect(root: Path | str, windows: Collection[int] | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with a view per audit table, locked so that it cannot touch files.

    The views cover every completed window, or only `windows` when given.
    """
    store = AuditStore(root)
    done = set(store.windows())
    wanted = done if windows is None else done & set(windows)
    con = duckdb.connect(":memory:")
    for table in TABLES:
        con.register(table, store.dataset(table, wanted))
    for statement in _LOCK:
        con.execute(statement)
    return con


def check_read_only(sql: str) -> str:
    """The single read-only statement in `sql`, classified by DuckDB's parser; refuse anything else."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"the SQL does not parse: {exc}") from exc
    if not statements:
        raise QueryError(f"no SQL statement given; {_HINT}")
    if len(statements) > 1:
        kinds = ", ".join(s.type.name for s in statements)
        raise ReadOnlyError(
            f"{len(statements)} statements given ({kinds}); only one runs, since a second one after ';' "
            f"could be one that writes; gauntlet audit is read-only"
        )
    statement = statements[0]
    kind = statement.type
    if kind == duckdb.StatementType.EXPLAIN:
        inner = _explained(statement.query)
        kind = duckdb.extract_statements(inner)[0].type if inner.strip() else kind
    if kind != _READ:
        raise ReadOnlyError(f"{kind.name} refused: it writes or changes state; gauntlet audit is read-only ({_HINT})")
    return statement.query


def _explained(query: str) -> str:
    """The statement an EXPLAIN [ANALYZE] [(options)] wraps, found with DuckDB's tokenizer."""
    tokens = [(pos, kind) for pos, kind in duckdb.tokenize(query) if kind != duckdb.token_type.comment]
    i, depth = 1, 0  # tokens[0] is EXPLAIN
    if i < len(tokens) and query[tokens[i][0]:].lower().startswith("analyze"):
        i += 1
    while i < len(tokens):
        text = query[tokens[i][0]]
        depth += (text == "(") - (text == ")")
        if depth == 0 and text != ")":
            break
        i += 1
    return query[tokens[i][0]:] if i < len(tokens) else ""


def run_sql(root: Path | str, sql: str) -> pl.DataFrame:
    """Run one read-only statement over the audit views and return its rows."""
    statement = check_read_only(sql)
    con = connect(root)
    try:
        return con.sql(statement).pl()
    except duckdb.PermissionException as exc:
        raise ReadOnlyError(
            f"the statement reaches outside the audit views ({exc}); file writes and reads are disabled "
            "because gauntlet audit is read-only"
        ) from exc
    except duckdb.Error as exc:
        raise QueryError(str(exc)) from exc
    finally:
        con.close()


def format_frame(df: pl.DataFrame, fmt: str = "table") -> str:
    """A result as an aligned text table, CSV (nested values as JSON text) or a JSON array of rows."""
    if fmt == "table":
        with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=120, tbl_width_chars=400,
                       fmt_table_cell_list_len=16, tbl_hide_dataframe_shape=True):
            return f"{df}\n({df.height} rows)\n"
    if fmt == "csv":
        nested = [name for name, dtype in df.schema.items() if dtype.is_nested()]
        flat = df.with_columns(
            pl.col(name).map_elements(lambda v: json.dumps(_plain(v)), return_dtype=pl.String) for name in nested
        )
        return flat.write_csv()
    if fmt == "json":
        buffer = io.StringIO()
        df.write_json(buffer)
        return buffer.getvalue() + "\n"
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _plain(value: object) -> object:
    """A nested value polars hands to Python (lists of Series or dicts) as JSON-ready data."""
    if isinstance(value, pl.Series):
        return [_plain(v) for v in value.to_list()]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
