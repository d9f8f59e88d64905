from __future__ import annotations

import io
import json
from pathlib import Path

import duckdb
import polars as pl
import pytest

from gauntlet.audit import (
    SCHEMAS,
    TABLES,
    AuditStore,
    QueryError,
    ReadOnlyError,
    check_read_only,
    connect,
    format_frame,
    run_sql,
)
from tests.gauntlet.audit import COPYCAT, HONEST, LATE, UIDS, synthetic_window

WINDOWS = (0, 1, 2, 3)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audit")
    store = AuditStore(path)
    for window in WINDOWS:
        store.write_window(window, synthetic_window(window))
    return path


def _files(root: Path) -> set[Path]:
    return {p for p in root.parent.rglob("*") if p.is_file()}


def test_one_view_per_table_with_typed_window_id(root: Path) -> None:
    con = connect(root)
    assert sorted(con.sql("SHOW TABLES").pl()["name"]) == sorted(TABLES)
    for table in TABLES:
        described = con.sql(f"DESCRIBE {table}").pl()
        assert described["column_name"].to_list() == SCHEMAS[table].names
        assert described.filter(column_name="window_id")["column_type"].item() == "BIGINT"
    con.close()


def test_queries_answer_over_all_windows(root: Path) -> None:
    counts = run_sql(root, "SELECT window_id, count(*) AS n FROM ratings GROUP BY window_id ORDER BY window_id")
    assert counts.to_dicts() == [{"window_id": w, "n": len(UIDS)} for w in WINDOWS]
    rejections = run_sql(root, f"SELECT window_id, reason FROM verdicts WHERE uid = {LATE} AND reason <> 'ok' ORDER BY 1")
    assert rejections["reason"].to_list() == ["too_late"] * len(WINDOWS)
    top = run_sql(root, "SELECT uid, avg(final_score) AS f FROM ratings GROUP BY uid ORDER BY f DESC, uid LIMIT 1")
    assert top["uid"].item() == HONEST
    copy = run_sql(root, f"""
        SELECT s.max_overlap, s.overlap_with, v.reason FROM scores s JOIN verdicts v USING (window_id, uid)
        WHERE uid = {COPYCAT} AND window_id = 2""")
    assert copy.to_dicts() == [{"max_overlap": 0.82, "overlap_with": HONEST, "reason": "copied"}]
    assert run_sql(root, "SELECT window_id FROM scores WHERE window_id = 3 LIMIT 1").item() == 3


def test_empty_root_every_view_is_queryable(tmp_path: Path) -> None:
    for table in TABLES:
        frame = run_sql(tmp_path / "nothing", f"SELECT * FROM {table}")
        assert frame.height == 0 and frame.columns == SCHEMAS[table].names
    assert run_sql(tmp_path, "SELECT count(*) FROM scores").item() == 0


def test_empty_table_next_to_full_ones(tmp_path: Path) -> None:
    tables = synthetic_window(0)
    tables["scores"] = []
    AuditStore(tmp_path).write_window(0, tables)
    assert run_sql(tmp_path, "SELECT count(*) FROM scores").item() == 0
    assert run_sql(tmp_path, "SELECT count(*) FROM ratings").item() == len(UIDS)


def test_leftover_temp_files_and_incomplete_windows_are_not_in_the_views(tmp_path: Path) -> None:
    store = AuditStore(tmp_path)
    store.write_window(0, synthetic_window(0))
    (store.path("scores", 0).parent / ".part-0.parquet.dead.tmp").write_bytes(b"PAR1 torn")
    store.write("scores", 1, synthetic_window(1)["scores"])  # a window whose `windows` row never came
    assert run_sql(tmp_path, "SELECT DISTINCT window_id FROM scores").to_series().to_list() == [0]


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("INSERT INTO scores (uid) VALUES (1)", "INSERT"),
        ("CREATE TABLE x AS SELECT * FROM scores", "CREATE"),
        ("COPY (SELECT * FROM scores) TO '{out}'", "COPY"),
        ("ATTACH '{out}' AS other", "ATTACH"),
        ("SELECT 1; COPY (SELECT 1) TO '{out}'", "2 statements"),
        ("SELECT 1; SELECT 2", "2 statements"),
        ("EXPLAIN ANALYZE COPY (SELECT 1) TO '{out}'", "COPY"),
        ("EXPLAIN (FORMAT json) CREATE TABLE y (a INT)", "CREATE"),
        ("INSTALL httpfs", "LOAD"),
        ("SET threads = 1", "SET"),
        ("PRAGMA version", "PRAGMA"),
        ("DROP VIEW scores", "DROP"),
        ("EXPORT DATABASE '{out}'", "EXPORT"),
    ],
)
def test_writes_are_refused(root: Path, sql: str, kind: str) -> None:
    out = root.parent / "leak.out"
    before = _files(root)
    with pytest.raises(ReadOnlyError, match="gauntlet audit is read-only") as err:
        run_sql(root, sql.format(out=out))
    assert kind in str(err.value)
    assert _files(root) == before and not out.exists()


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A readable Parquet file outside the audit root."""
    path = tmp_path_factory.mktemp("elsewhere") / "other.parquet"
    duckdb.connect().execute(f"COPY (SELECT 42 AS secret) TO '{path}'")
    return path


@pytest.mark.parametrize(
    ("sql", "error"),
    [
        ("COPY (SELECT * FROM scores) TO '{out}'", duckdb.PermissionException),
        ("COPY (SELECT * FROM scores) TO '{root}/leak.parquet'", duckdb.PermissionException),
        ("ATTACH '{root}/direct.db'", duckdb.PermissionException),
        ("EXPORT DATABASE '{root}/export'", duckdb.PermissionException),
        ("INSTALL httpfs", duckdb.PermissionException),
        ("LOAD httpfs", duckdb.PermissionException),
        ("SELECT * FROM read_csv('/etc/passwd')", duckdb.PermissionException),
        ("SELECT * FROM read_text('/etc/hostname')", duckdb.PermissionException),
        ("SELECT * FROM glob('/etc/*')", duckdb.PermissionException),
        ("SELECT * FROM read_parquet('{outside}')", duckdb.PermissionException),
        ("SELECT * FROM read_parquet('{root}/scores/../../{outside_rel}')", duckdb.PermissionException),
        ("DELETE FROM scores", duckdb.Error),
        ("DROP VIEW scores; SELECT 1", None),
        ("SET enable_external_access = true", duckdb.InvalidInputException),
        ("SET allowed_directories = ['/']", duckdb.InvalidInputException),
        ("SET disabled_filesystems = ''", duckdb.InvalidInputException),
    ],
)
def test_the_connection_itself_cannot_touch_files(root: Path, outside: Path, sql: str, error: type | None) -> None:
    """Past the parser: the locked connection refuses file access outside the table folders."""
    before, rows = _files(root), run_sql(root, "SELECT count(*) FROM scores").item()
    con = connect(root)
    statement = sql.format(out=root.parent / "direct.csv", root=root, outside=outside,
                           outside_rel=Path("..") / outside.relative_to(outside.parents[1]))
    if error is None:  # the view is dropped in this connection only; the files are untouched
        con.execute(statement)
    else:
        with pytest.raises(error):
            con.execute(statement)
    con.close()
    assert _files(root) == before and not (root.parent / "direct.csv").exists()
    assert run_sql(root, "SELECT count(*) FROM scores").item() == rows > 0


def test_python_variables_are_not_tables(root: Path) -> None:
    hidden = pl.DataFrame({"secret": [1]})  # DuckDB would otherwise read a Python variable by its name
    con = connect(root)
    with pytest.raises(duckdb.CatalogException):
        con.sql("SELECT * FROM hidden")
    con.close()
    assert hidden.height == 1


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_parquet('{outside}')",
    "SELECT * FROM read_parquet('{root}/../elsewhere*/other.parquet')",
])
def test_reads_outside_the_tables_are_refused(root: Path, outside: Path, sql: str) -> None:
    with pytest.raises(ReadOnlyError, match="file writes and reads are disabled"):
        run_sql(root, sql.format(root=root, outside=outside))


def test_an_overwrite_of_an_audit_file_never_reaches_duckdb(root: Path) -> None:
    """DuckDB lets a COPY write into an allowed folder; the parser layer refuses it first."""
    target = AuditStore(root).path("scores", 1)
    before = target.read_bytes()
    for sql in (f"COPY (SELECT 1 AS uid) TO '{target}' (FORMAT parquet, USE_TMP_FILE false)",
                f"EXPLAIN ANALYZE COPY (SELECT 1 AS uid) TO '{target}' (USE_TMP_FILE false)",
                f"ATTACH '{target}' AS x"):
        with pytest.raises(ReadOnlyError):
            run_sql(root, sql)
    assert target.read_bytes() == before


def test_views_are_native_parquet_scans(root: Path) -> None:
    plan = run_sql(root, "EXPLAIN SELECT uid FROM scores WHERE window_id = 2")["explain_value"].item()
    assert "READ_PARQUET" in plan.upper() and "ARROW" not in plan.upper()
    expected = len(synthetic_window(2)["scores"])
    assert run_sql(root, "SELECT count(*) FROM scores WHERE window_id = 2").item() == expected > 0


def test_windows_argument_limits_the_views(root: Path) -> None:
    con = connect(root, windows=[1, 3, 99])
    assert con.sql("SELECT DISTINCT window_id FROM ratings ORDER BY 1").pl().to_series().to_list() == [1, 3]
    con.close()
    con = connect(root, windows=[])
    assert con.sql("SELECT count(*) FROM ratings").fetchall() == [(0,)]
    con.close()


@pytest.mark.parametrize(
    "sql",
    ["DESCRIBE ratings", "SHOW TABLES", "SUMMARIZE weights", "EXPLAIN SELECT * FROM scores",
     "EXPLAIN ANALYZE SELECT count(*) FROM scores", "WITH a AS (SELECT 1 AS x) SELECT * FROM a",
     "FROM windows SELECT window_id", "SELECT 1;  -- trailing comment"],
)
def test_read_only_statements_run(root: Path, sql: str) -> None:
    assert run_sql(root, sql).height >= 1


def test_bad_sql_is_a_query_error(root: Path) -> None:
    with pytest.raises(QueryError, match="does not parse"):
        run_sql(root, "SELEC 1")
    with pytest.raises(QueryError, match="no SQL statement"):
        run_sql(root, "  -- nothing")
    with pytest.raises(QueryError, match="nope"):
        run_sql(root, "SELECT nope FROM scores")
    assert check_read_only("select 1 ;") == "select 1 ;"


def test_formats(root: Path) -> None:
    sql = "SELECT window_id, uid, final_score, penalties FROM ratings WHERE window_id = 1 ORDER BY uid"
    frame = run_sql(root, sql)
    text = format_frame(frame, "table")
    assert "final_score" in text and "missing x0.75" in text and f"({len(UIDS)} rows)" in text
    back = pl.read_csv(io.StringIO(format_frame(frame, "csv")))
    assert back["uid"].to_list() == list(UIDS)
    assert back["final_score"].to_list() == frame["final_score"].to_list()
    assert [json.loads(p) for p in back["penalties"]] == frame["penalties"].to_list()
    rows = json.loads(format_frame(frame, "json"))
    assert rows == frame.to_dicts()
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        format_frame(frame, "xml")


def test_formats_of_an_empty_result(root: Path) -> None:
    empty = run_sql(root, "SELECT * FROM weights WHERE uid = -1")
    assert json.loads(format_frame(empty, "json")) == []
    assert format_frame(empty, "csv").splitlines()[0].split(",") == SCHEMAS["weights"].names
    assert "(0 rows)" in format_frame(empty, "table")
