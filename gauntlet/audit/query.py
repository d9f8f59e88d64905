"""Read-only SQL over the audit tables: DuckDB in memory, one view per table.

Each view is DuckDB's own `read_parquet` over the table's files of completed windows (an explicit
list, so a window whose `windows` row never came stays out; hive partition `window_id`, typed
int64): DuckDB's native scan speed (benchmarks/bench_audit). Three layers keep it read-only:

1. DuckDB's parser classifies the statement first: one SELECT-like statement (SELECT, WITH, FROM,
   DESCRIBE, SHOW, SUMMARIZE) or an EXPLAIN of one is run; anything else is refused.
2. The connection runs with `enable_external_access=false`, `allowed_directories` = the six table
   folders, no extension loading and a locked configuration. It cannot read any file outside
   those folders (`read_csv('/etc/passwd')`, a Parquet file elsewhere, `..` tricks), write one
   outside them (`COPY ... TO`, `ATTACH`, `EXPORT`), nor install or load an extension.
3. What DuckDB cannot refuse: it grants an allowed folder for writing as well as reading, so a
   `COPY ... TO '<root>/scores/...'` sent straight to the connection would write there. Only a
   non-SELECT statement can, and layer 1 refuses every one of them before DuckDB sees it; code
   that calls `connect` itself runs fixed SELECTs. (Listing each file in `allowed_paths` instead
   would narrow this to overwriting a listed file, at 0.3 s per connection for 6,000 files. The
   Arrow-dataset views used before needed no file access at all but scanned up to 2.6x slower,
   and a read-only Python filesystem registered in DuckDB was slower still.)

A table with no files yet is an empty Arrow table with the table's schema, so every view exists
from the first window on.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Collection
from pathlib import Path

import duckdb
import polars as pl

from gauntlet.audit.schema import SCHEMAS, TABLES
from gauntlet.audit.store import PART, AuditStore

FORMATS = ("table", "csv", "json")
_READ = duckdb.StatementType.SELECT
_LOCK = (
    "SET python_enable_replacements = false",  # no reading of Python variables that share a table's name
    "SET autoinstall_known_extensions = false",
    "SET autoload_known_extensions = false",
    "SET enable_external_access = false",  # after allowed_paths, which it then freezes
)
_HINT = "use one SELECT, WITH, FROM, DESCRIBE, SHOW, SUMMARIZE or EXPLAIN statement"


class ReadOnlyError(PermissionError):
    """A statement would write (files, tables, settings); the audit SQL is read-only."""


class QueryError(ValueError):
    """A statement is not valid SQL or failed (unknown column, bad type...)."""


def connect(root: Path | str, windows: Collection[int] | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with a view per audit table, locked to reading the audit folders.

    The views cover every completed window, or only `windows` when given.
    """
    store = AuditStore(root)
    done = set(store.windows())
    wanted = sorted(done if windows is None else done & set(windows))
    base = os.path.abspath(store.root)
    con = duckdb.connect(":memory:")
    try:
        folders = [f"{base}/{table}/" for table in TABLES]
        con.execute(f"SET allowed_directories = {_sql_list(folders)}")
        for statement in _LOCK:
            con.execute(statement)
        for table in TABLES:
            files = [f"{base}/{table}/window_id={w}/{PART}" for w in wanted]  # f-strings: 6,000 joins cost 50 ms
            _create_view(con, table, files)
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def _create_view(con: duckdb.DuckDBPyConnection, table: str, files: list[str]) -> None:
    """`read_parquet` over the files named by a variable; an empty Arrow table when there are none.

    The view's SQL names the variable, not the files: a list literal of 1,000 paths takes DuckDB
    tens of milliseconds to parse, and the view is bound against the first file only (for its
    columns) before the variable is given the whole list, which every query then reads.
    """
    if not files:  # read_parquet needs at least one file; the empty table keeps the types
        con.register(table, SCHEMAS[table].empty_table())
        return
    variable = f"{table}_files"
    columns = ", ".join(f'"{name}"' for name in SCHEMAS[table].names)  # the schema's order, window_id first
    con.execute(f"SET VARIABLE {variable} = $1", [files[:1]])
    con.execute(f"CREATE VIEW {table} AS SELECT {columns} FROM read_parquet(getvariable('{variable}'), "
                "hive_partitioning = true, hive_types = {'window_id': BIGINT})")
    con.execute(f"SET VARIABLE {variable} = $1", [files])


def _sql_list(items: list[str]) -> str:
    """A DuckDB list literal of strings (quotes doubled: a path may hold one)."""
    return "[" + ", ".join("'" + item.replace("'", "''") + "'" for item in items) + "]"


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
