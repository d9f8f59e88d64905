"""Parquet audit store: one immutable file per table per window, published atomically.

Layout: `<root>/<table>/window_id=<W>/part-0.parquet`, W not zero-padded (readers give the
hive column an explicit int64 type anyway). A file is written under a temporary name that starts
with a dot and does not end in `.parquet` (so no glob or dataset picks it up), fsynced, then
published with `os.link` (which fails if another writer got there first) or `os.replace` for a
deliberate overwrite. `write_window` writes `windows` last: a `windows` row means the window is
complete, and the readers show only complete windows, so a crash mid-window leaves nothing that
a query or a restart could mistake for a result.

The validator's running state is rebuilt from `latest_ratings()`; no other state file exists.
"""

from __future__ import annotations

import operator
import os
import re
import secrets
import shutil
from collections.abc import Collection, Mapping
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from gauntlet.audit.schema import SCHEMAS, TABLES, VOLATILE, Rows, conform, file_schema

PART = "part-0.parquet"
_PARTITION = re.compile(r"^window_id=(\d+)$")
_HIVE = ds.partitioning(pa.schema([pa.field("window_id", pa.int64())]), flavor="hive")


class AuditConflict(RuntimeError):
    """A window's table already holds different rows; rerun with overwrite=True to replace them."""


class AuditStore:
    """The audit tables of one validator (or one local network) under a root folder."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, table: str, window_id: int) -> Path:
        _check_table(table)
        return self.root / table / f"window_id={_check_window(window_id)}" / PART

    def write(self, table: str, window_id: int, rows: Rows, *, overwrite: bool = False) -> Path:
        """Validate rows against the table's schema and publish them as the window's file.

        Writing the same rows again is a no-op (an idempotent rerun keeps the first file);
        different rows raise AuditConflict unless `overwrite=True` (a deliberate rerun).
        """
        data = conform(table, _check_window(window_id), rows)
        return self._publish(table, window_id, data, overwrite)

    def write_window(self, window_id: int, tables: Mapping[str, Rows], *, overwrite: bool = False) -> dict[str, Path]:
        """Write all six tables of a window, `windows` last, after validating every one of them.

        Tables left by a crashed write (no `windows` row yet) are replaced without a conflict:
        they were never part of a complete window.
        """
        missing, extra = set(TABLES) - set(tables), set(tables) - set(TABLES)
        if missing or extra:
            raise ValueError(
                f"write_window({window_id}) needs exactly the tables {', '.join(TABLES)}; "
                f"missing: {sorted(missing) or 'none'}, unknown: {sorted(extra) or 'none'} (pass [] for no rows)"
            )
        data = {name: conform(name, _check_window(window_id), tables[name]) for name in TABLES}
        replace = overwrite or not self.has_window(window_id)
        if not replace:
            for name in TABLES:
                self._check_conflict(name, window_id, data[name])
        order = [name for name in TABLES if name != "windows"] + ["windows"]
        return {name: self._publish(name, window_id, data[name], replace) for name in order}

    def windows(self) -> list[int]:
        """Completed windows (those with a `windows` file), ascending."""
        return sorted(w for w, _ in self._files("windows"))

    def has_window(self, window_id: int) -> bool:
        return self.path("windows", window_id).is_file()

    def read(self, table: str, window_id: int | None = None) -> pl.DataFrame:
        """One window's rows (whatever was written), or every completed window's rows."""
        _check_table(table)
        if window_id is not None:
            path = self.path(table, window_id)
            if not path.is_file():
                return pl.from_arrow(SCHEMAS[table].empty_table())
            data = pq.read_table(path, schema=file_schema(table))
            column = pa.array([_check_window(window_id)] * data.num_rows, pa.int64())
            return pl.from_arrow(data.add_column(0, "window_id", column))
        return pl.from_arrow(self.dataset(table).to_table())

    def dataset(self, table: str, windows: Collection[int] | None = None) -> ds.Dataset:
        """A lazy Arrow dataset over the table's files (hive `window_id`, int64).

        By default the files of every completed window; `windows` picks those windows instead
        (the caller vouches they are complete, as `connect` does; it saves listing them again).
        """
        _check_table(table)
        wanted = set(self.windows()) if windows is None else set(windows)
        files = [path for w, path in self._files(table) if w in wanted]
        return ds.dataset(files, schema=SCHEMAS[table], format="parquet", partitioning=_HIVE,
                          partition_base_dir=str(self.root / table))

    def latest_ratings(self, before_window: int | None = None) -> pl.DataFrame:
        """The newest complete ratings snapshot (before `before_window` if given): the state to resume from."""
        done = [w for w in self.windows() if before_window is None or w < before_window]
        if not done:
            return pl.from_arrow(SCHEMAS["ratings"].empty_table())
        return self.read("ratings", done[-1])

    def delete_window(self, window_id: int) -> bool:
        """Remove a window's files (`windows` first, so it is never seen half-deleted); True if any existed."""
        found = False
        for name in ["windows"] + [t for t in TABLES if t != "windows"]:
            folder = self.path(name, window_id).parent
            if folder.is_dir():
                found = True
                shutil.rmtree(folder)
                _fsync_dir(folder.parent)
        return found

    def _files(self, table: str) -> list[tuple[int, str]]:
        """(window, path) of every published file of a table; plain strings, as this runs per file."""
        folder = os.path.join(self.root, table)
        if not os.path.isdir(folder):
            return []
        out = []
        for entry in os.scandir(folder):
            match = _PARTITION.match(entry.name)
            path = os.path.join(entry.path, PART)
            if match and os.path.isfile(path):
                out.append((int(match.group(1)), path))
        return sorted(out)

    def _check_conflict(self, table: str, window_id: int, data: pa.Table) -> bool:
        """True if the window's file exists with the same rows; AuditConflict if with other rows."""
        path = self.path(table, window_id)
        if not path.is_file():
            return False
        if _same_rows(table, path, data):
            return True
        raise AuditConflict(
            f"{table} of window {window_id} already exists at {path} with different rows; "
            "pass overwrite=True for a deliberate rerun, or delete_window() first"
        )

    def _publish(self, table: str, window_id: int, data: pa.Table, overwrite: bool) -> Path:
        path = self.path(table, window_id)
        window_id = _check_window(window_id)
        if not overwrite and self._check_conflict(table, window_id, data):
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{PART}.{secrets.token_hex(6)}.tmp"
        try:
            with open(tmp, "wb") as handle:
                pq.write_table(data, handle)
                handle.flush()
                os.fsync(handle.fileno())
            if overwrite:
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)  # unlike a rename, fails if the name exists
                except FileExistsError:  # another writer published first: same rows or conflict
                    self._check_conflict(table, window_id, data)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)
        return path


def _same_rows(table: str, path: Path, data: pa.Table) -> bool:
    try:
        old = pq.read_table(path, schema=file_schema(table))
    except (pa.ArrowInvalid, OSError):
        return False
    volatile = [c for c in VOLATILE.get(table, ()) if c in data.column_names]
    old_frame = pl.from_arrow(old.drop_columns(volatile))
    new_frame = pl.from_arrow(data.drop_columns(volatile))
    return old_frame.equals(new_frame, null_equal=True)


def _fsync_dir(folder: Path) -> None:
    """Make a rename or removal durable (the directory entry, not only the file's bytes)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_table(table: str) -> None:
    if table not in SCHEMAS:
        raise KeyError(f"unknown audit table {table!r}; tables are {', '.join(TABLES)}")


def _check_window(window_id: int) -> int:
    try:
        value = operator.index(window_id)
    except TypeError:
        value = -1
    if isinstance(window_id, bool) or value < 0:
        raise ValueError(f"window_id must be a non-negative int, got {window_id!r}")
    return value
