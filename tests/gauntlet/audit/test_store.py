from __future__ import annotations

import copy
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gauntlet.audit import SCHEMAS, TABLES, AuditConflict, AuditStore, SchemaError, conform
from gauntlet.audit import store as store_module
from tests.gauntlet.audit import COPYCAT, HONEST, LATE, UIDS, synthetic_window


@pytest.fixture
def store(tmp_path: Path) -> AuditStore:
    return AuditStore(tmp_path / "audit")


def test_layout_one_file_per_table_per_window(store: AuditStore) -> None:
    for window in (3, 12):
        store.write_window(window, synthetic_window(window))
    files = sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())
    expected = sorted(f"{t}/window_id={w}/part-0.parquet" for t in TABLES for w in (3, 12))
    assert files == expected  # nothing else: no temporary file left behind
    assert store.windows() == [3, 12]
    assert store.has_window(12) and not store.has_window(4)
    # window_id lives in the folder name, not in the file
    assert "window_id" not in pq.read_schema(store.path("scores", 3)).names


def test_write_window_writes_windows_last(store: AuditStore) -> None:
    paths = store.write_window(7, synthetic_window(7))
    assert list(paths)[-1] == "windows"
    mtimes = {t: os.stat(p).st_mtime_ns for t, p in paths.items()}
    assert mtimes["windows"] == max(mtimes.values())


def test_read_round_trip_keeps_values_and_types(store: AuditStore) -> None:
    tables = synthetic_window(5)
    store.write_window(5, tables)
    for table in TABLES:
        frame = store.read(table, 5)
        assert frame.columns == SCHEMAS[table].names
        assert frame.schema == pl.from_arrow(SCHEMAS[table].empty_table()).schema, table
        assert frame["window_id"].to_list() == [5] * len(tables[table])
    ratings = store.read("ratings", 5).to_dicts()
    assert [r["uid"] for r in ratings] == sorted(UIDS)
    by_uid = {r["uid"]: r for r in ratings}
    assert by_uid[LATE]["penalties"] == ["missing x0.75"]
    assert by_uid[COPYCAT]["banned_until"] == 205
    sub = store.read("submissions", 5).filter(uid=HONEST).row(0, named=True)
    assert sub["last_modified"] == datetime.fromtimestamp(synthetic_window(5)["windows"][0]["t_min"] + 2.0, UTC)
    assert store.read("scores", 5).schema["indicator"] == pl.Int8


def test_rows_are_stored_sorted_by_key(store: AuditStore) -> None:
    tables = synthetic_window(1)
    tables["ratings"] = list(reversed(tables["ratings"]))
    store.write_window(1, tables)
    assert store.read("ratings", 1)["uid"].to_list() == sorted(UIDS)


def test_identical_rerun_is_a_no_op(store: AuditStore) -> None:
    first = store.write_window(2, synthetic_window(2))
    before = {t: os.stat(p).st_ino for t, p in first.items()}
    created = store.read("windows", 2)["created_at"].item()
    rerun = synthetic_window(2)  # same results, a later created_at and other timings
    rerun["windows"][0]["timings_json"] = json.dumps({"fetch": 9.0})
    second = store.write_window(2, rerun)
    assert {t: os.stat(p).st_ino for t, p in second.items()} == before  # the first files were kept
    assert store.read("windows", 2)["created_at"].item() == created
    assert store.write("scores", 2, synthetic_window(2)["scores"]) == first["scores"]


def test_different_content_conflicts_unless_overwrite(store: AuditStore) -> None:
    store.write_window(2, synthetic_window(2))
    changed = synthetic_window(2)
    changed["scores"][0]["loss_own_after"] += 1e-6
    with pytest.raises(AuditConflict, match="scores of window 2 already exists"):
        store.write_window(2, changed)
    with pytest.raises(AuditConflict, match="overwrite=True"):
        store.write("scores", 2, changed["scores"])
    assert store.read("scores", 2)["loss_own_after"].to_list() != [r["loss_own_after"] for r in changed["scores"]]
    store.write_window(2, changed, overwrite=True)
    got = store.read("scores", 2).sort("uid")["loss_own_after"].to_list()
    assert got == [r["loss_own_after"] for r in sorted(changed["scores"], key=lambda r: r["uid"])]


def test_conflict_leaves_every_table_untouched(store: AuditStore) -> None:
    store.write_window(4, synthetic_window(4))
    changed = synthetic_window(4)
    changed["weights"][0]["weight"] = 0.123
    inodes = {t: os.stat(store.path(t, 4)).st_ino for t in TABLES}
    with pytest.raises(AuditConflict):
        store.write_window(4, changed)
    assert {t: os.stat(store.path(t, 4)).st_ino for t in TABLES} == inodes


def test_incomplete_window_is_invisible_and_replaced_by_a_rerun(store: AuditStore) -> None:
    store.write_window(1, synthetic_window(1))
    partial = synthetic_window(2)
    store.write("scores", 2, partial["scores"])  # a crash before the other tables and `windows`
    assert store.windows() == [1]
    assert store.read("scores")["window_id"].unique().to_list() == [1]
    assert store.latest_ratings()["window_id"].unique().to_list() == [1]
    rerun = synthetic_window(2)
    rerun["scores"][0]["loss_own_after"] = 1.0  # e.g. a GPU rerun that differs in the last bits
    store.write_window(2, rerun)
    assert store.windows() == [1, 2]
    assert 1.0 in store.read("scores", 2)["loss_own_after"].to_list()


def test_failed_write_leaves_no_file(store: AuditStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(table: pa.Table, where: object) -> None:
        where.write(b"PAR1 half a file")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(store_module.pq, "write_table", crash)
    with pytest.raises(OSError, match="disk full"):
        store.write("ratings", 9, synthetic_window(9)["ratings"])
    folder = store.path("ratings", 9).parent
    assert list(folder.iterdir()) == []


def test_leftover_temporary_file_is_ignored(store: AuditStore) -> None:
    store.write_window(1, synthetic_window(1))
    folder = store.path("scores", 1).parent
    (folder / ".part-0.parquet.dead.tmp").write_bytes(b"half a file")
    stray = store.root / "scores" / "window_id=2"
    stray.mkdir()
    (stray / ".part-0.parquet.dead.tmp").write_bytes(b"half a file")
    assert store.read("scores").height == len(synthetic_window(1)["scores"])
    assert store.read("scores", 1).height == len(synthetic_window(1)["scores"])
    assert store.windows() == [1]


def test_empty_tables_are_written_and_read(store: AuditStore) -> None:
    tables = synthetic_window(0)
    tables["scores"] = []
    tables["weights"] = pl.DataFrame(schema={"uid": pl.Int64})  # an empty frame still has its columns checked
    with pytest.raises(SchemaError, match="missing columns"):
        store.write_window(0, tables)
    tables["weights"] = []
    store.write_window(0, tables)
    for table in ("scores", "weights"):
        frame = store.read(table, 0)
        assert frame.height == 0 and frame.columns == SCHEMAS[table].names
    assert store.read("scores").height == 0
    assert AuditStore(store.root / "nothing").read("ratings").columns == SCHEMAS["ratings"].names


def test_polars_frames_are_accepted_and_narrow_types_widened(store: AuditStore) -> None:
    rows = synthetic_window(3)["weights"]
    frame = pl.DataFrame(rows).with_columns(pl.col("uid").cast(pl.Int32), pl.col("set_at_block").cast(pl.Int16))
    store.write("weights", 3, frame)
    assert store.read("weights", 3).schema["uid"] == pl.Int64
    bad = pl.DataFrame(rows).with_columns(pl.col("uid").cast(pl.Float64))
    with pytest.raises(SchemaError, match=r"weights\.uid: expected BIGINT"):
        conform("weights", 3, bad)


def _mutate(table: str, change: dict) -> tuple[str, list[dict]]:
    rows = copy.deepcopy(synthetic_window(6)[table])
    for key, value in change.items():
        if value is _DROP:
            del rows[0][key]
            for row in rows[1:]:
                row.pop(key)
        else:
            rows[0][key] = value
    return table, rows


_DROP = object()


@pytest.mark.parametrize(
    ("table", "change", "message"),
    [
        ("scores", {"loss_own_after": _DROP}, r"scores: missing columns \['loss_own_after'\]"),
        ("scores", {"lost_own_after": 1.0}, r"row 1 has other columns than row 0 \(differ in \['lost_own_after'\]\)"),
        ("scores", {"loss_own_after": "3.9"}, r"scores\.loss_own_after: values of mixed"),
        ("ratings", {"inactive_windows": 1.5}, r"ratings\.inactive_windows: expected BIGINT \(int64\), got double"),
        ("weights", {"weight": True}, r"weights\.weight: values of mixed"),
        ("verdicts", {"reason": None}, r"verdicts\.reason: 1 null value\(s\) \(first at row 0\) but the column is not nullable"),
        ("verdicts", {"blame": "moon"}, r"verdicts\.blame: values \['moon'\] not in"),
        ("scores", {"indicator": 2}, r"scores\.indicator: values \[2\]"),
        ("scores", {"uid": 2}, r"scores: more than one row per \('uid',\)"),
        ("scores", {"window_id": 7}, r"column window_id must equal the window being written \(6\)"),
        ("windows", {"config_json": "{not json"}, r"windows\.config_json: row 0 is not valid JSON"),
        ("windows", {"gather_schedule_json": "{}"}, r"windows\.gather_schedule_json: row 0 must be a JSON array"),
        ("windows", {"checkpoint_after": "abc"}, r"windows\.checkpoint_after: row 0 is not a lowercase sha256"),
        ("ratings", {"penalties": ["ok", None]}, r"ratings\.penalties: a list holds a null item"),
        ("scores", {"indicator": 300}, r"scores\.indicator: cannot store the values as int8"),
    ],
)
def test_schema_errors_name_table_column_and_problem(store: AuditStore, table: str, change: dict, message: str) -> None:
    name, rows = _mutate(table, change)
    if "window_id" in change:
        rows = [{**r, "window_id": change["window_id"]} for r in rows]
    with pytest.raises(SchemaError, match=message):
        store.write(name, 6, rows)
    assert not store.path(name, 6).exists()


def test_bad_arguments(store: AuditStore) -> None:
    with pytest.raises(KeyError, match="unknown audit table 'score'"):
        store.write("score", 1, [])
    with pytest.raises(ValueError, match="non-negative int"):
        store.write("scores", -1, [])
    with pytest.raises(ValueError, match="non-negative int"):
        store.path("scores", True)
    tables = synthetic_window(1)
    del tables["weights"]
    with pytest.raises(ValueError, match=r"missing: \['weights'\]"):
        store.write_window(1, tables)


def test_latest_ratings_is_the_newest_complete_snapshot(store: AuditStore) -> None:
    assert store.latest_ratings().height == 0
    for window in (1, 2, 5):
        store.write_window(window, synthetic_window(window))
    latest = store.latest_ratings()
    assert latest["window_id"].unique().to_list() == [5]
    assert latest.sort("uid").drop("window_id").equals(store.read("ratings", 5).drop("window_id"))
    assert store.latest_ratings(before_window=5)["window_id"].unique().to_list() == [2]
    assert store.latest_ratings(before_window=1).height == 0


def test_delete_window(store: AuditStore) -> None:
    for window in (1, 2):
        store.write_window(window, synthetic_window(window))
    assert store.delete_window(2)
    assert store.windows() == [1]
    assert not any((store.root / t / "window_id=2").exists() for t in TABLES)
    assert not store.delete_window(2)
    store.write_window(2, synthetic_window(2))  # a deliberate rerun after deleting
    assert store.windows() == [1, 2]
