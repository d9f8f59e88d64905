"""The audit tables: one explicit Arrow schema per table, with a sentence per column.

Every table is partitioned by `window_id` (`window` is a reserved word in DuckDB). The Parquet
files hold every column but `window_id`, which lives in the folder name
(`<table>/window_id=<W>/part-0.parquet`) and is added back by the readers, typed int64.

One spec per column (name, type, nullable, description) keeps the schema, the nullability checks
and `gauntlet audit --schema` from drifting apart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

Column = tuple[str, pa.DataType, bool, str]

WINDOW_ID: Column = ("window_id", pa.int64(), False, "the training window W (= block // blocks_per_window)")
_TS = pa.timestamp("us", tz="UTC")
_HEX = "sha256 hex digest"

_SPECS: dict[str, list[Column]] = {
    "windows": [
        WINDOW_ID,
        ("first_block", pa.int64(), False, "first chain block of the window"),
        ("last_block", pa.int64(), False, "last chain block of the window"),
        ("t_min", pa.float64(), False, "start of the put window, unix seconds (chain time of block 0 of W+1)"),
        ("t_max", pa.float64(), False, "end of the put window, unix seconds (t_min + filter.put_window_s)"),
        ("block_hash", pa.string(), False, "hash of the block the random seed was derived from"),
        ("seed", pa.int64(), False, "random seed of the window's random pages (stored so it can be replayed)"),
        ("config_json", pa.string(), False, "the resolved validator config, as JSON"),
        ("checkpoint_before", pa.string(), False, f"{_HEX} of the model state the peers were scored against"),
        ("checkpoint_after", pa.string(), False, f"{_HEX} of the model state after the aggregated step"),
        ("validator_version", pa.string(), False, "version of the gauntlet package that validated the window"),
        ("validator_hotkey", pa.string(), True, "hotkey (ss58) of the validator; null if it has none"),
        ("gather_uids", pa.list_(pa.int64()), False,
         "uids whose updates were aggregated into the model step"),
        ("gather_schedule_json", pa.string(), False,
         "the gather-set schedule after the window, JSON [[effective_window, [uids]], ...]"),
        ("plan_json", pa.string(), False, "the window's plan (blocks, times, peers, commitments), as JSON"),
        ("lr", pa.float64(), False, "learning rate lr_W of the window (schedule value)"),
        ("timings_json", pa.string(), False, "seconds spent per stage, as a JSON object"),
        ("created_at", _TS, False, "when the window's audit rows were written (UTC)"),
        ("internal_errors", pa.int64(), False,
         "peers whose data raised an unexpected error in the validator (verdict internal_error; see window/guard.py)"),
        ("sync_ema_json", pa.string(), True,
         "the 2026 sync rule's EMA of each probed parameter's change after the step (JSON); null when off"),
        ("anchor_mu", pa.float64(), True,
         "the anchor player's mu after the window's match (rating.anchor, ours); null when off or before it first played"),
        ("anchor_sigma", pa.float64(), True,
         "the anchor player's sigma after the window's match; the final score uses each peer's ordinal minus "
         "the anchor's (anchor_mu - 3 anchor_sigma)"),
    ],
    "submissions": [
        WINDOW_ID,
        ("uid", pa.int64(), False, "peer uid"),
        ("key", pa.string(), False, "object key the validator looked for in the peer's bucket"),
        ("size", pa.int64(), True, "object size in bytes; null if the object was missing"),
        ("last_modified", _TS, True, "the object store's LastModified time; null if missing"),
        ("content_hash", pa.string(), True, f"{_HEX} of the file; null if not fetched"),
        ("archived_path", pa.string(), True, "where the validator kept a copy for replays; null if none"),
        ("time_trusted", pa.bool_(), False,
         "last_modified came from a store on storage.trusted_time_hosts, not from the peer's own server"),
        ("provider", pa.string(), True, "the trusted-host pattern the endpoint matched; null for any other"),
    ],
    "verdicts": [
        WINDOW_ID,
        ("uid", pa.int64(), False, "peer uid"),
        ("stage", pa.string(), False, "where the decision was taken: fetch, filter, sync, copy or score"),
        ("reason", pa.string(), False, "ok, missing, too_early, too_late, untrusted_time, malformed, non_finite, "
                                        "equivocated, desynced, copied, banned, internal_error, validator_fault or "
                                        "infrastructure"),
        ("detail", pa.string(), False, "the decision in plain words, with the measured values"),
        ("blame", pa.string(), False, "who is at fault: peer, validator, infrastructure or none"),
    ],
    "scores": [
        WINDOW_ID,
        ("uid", pa.int64(), False, "peer uid"),
        ("loss_own_before", pa.float64(), True, "L_own_before: loss on the peer's own pages before its step"),
        ("loss_own_after", pa.float64(), True, "L_own_after: loss on the peer's own pages after its step"),
        ("loss_rand_before", pa.float64(), True, "L_rand_before: loss on the window's random pages before"),
        ("loss_rand_after", pa.float64(), True, "L_rand_after: loss on the random pages after the peer's step"),
        ("gradient_score", pa.float64(), True, "s_k = (L_rand_before - L_rand_after) / L_rand_before"),
        ("own_improvement", pa.float64(), True, "r_own = (L_own_before - L_own_after) / L_own_before"),
        ("indicator", pa.int8(), True,
         "b: +1 (own data), -1 (not), 0 (sequential test undecided at its cap); null if not evaluated or screened"),
        ("moving_average", pa.float64(), True,
         "B after this window's update (B = ema B + (1 - ema) b), before penalties; null if not evaluated or "
         "screened (B unchanged)"),
        ("sync_score", pa.float64(), True, "(1 - min(x, 5) / 5) ** 2.5 with x = steps behind; null if no probe"),
        ("steps_behind", pa.float64(), True, "x = mean |theta_validator - theta_peer| / lr_W over the probe"),
        ("max_overlap", pa.float64(), True,
         "largest top-k index overlap with another peer whose file passed the format and sync checks, in "
         "[0, 1] (how close it came to the copy thresholds); null if it was not compared"),
        ("overlap_with", pa.int64(), True, "the uid of that other peer; null if none"),
        ("score_estimate", pa.float64(), True,
         "screening (ours): first-order estimate of s_k, eta <grad L_rand, sign(delta_k)> / L_rand_before; "
         "null when screening is off or the peer's file could not be decoded"),
        ("own_batches", pa.int64(), True,
         "sequential own-data test (ours): own batches the indicator used (sampled plus drawn while close); "
         "null under the margin rule"),
        ("own_difference", pa.float64(), True,
         "sequential test: mean per-batch own improvement - mean random one - own_margin |s_k|; null: margin rule"),
        ("own_std_error", pa.float64(), True,
         "sequential test: standard error of own_difference (Welch, per-batch sd floored at own_sd_floor |s_k|); "
         "b = +1 if own_difference > own_z x this, -1 if < -own_z x this; null under the margin rule"),
        ("scored_exactly", pa.bool_(), True,
         "true: s_k from measured losses; false: screened, gradient_score is the calibrated estimate (no own-data "
         "losses, indicator and B not updated); null if not evaluated"),
    ],
    "ratings": [
        WINDOW_ID,
        ("uid", pa.int64(), False, "peer uid (one row per known peer: a full snapshot of the state)"),
        ("mu", pa.float64(), False, "OpenSkill mu after this window"),
        ("sigma", pa.float64(), False, "OpenSkill sigma after this window"),
        ("ordinal", pa.float64(), False, "mu - 3 sigma after this window"),
        ("moving_average", pa.float64(), False, "B, the uniqueness moving average, after penalties"),
        ("sync_score", pa.float64(), True, "the sync score used in F: the last measured, 1.0 until the first probe"),
        ("final_score", pa.float64(), False, "F, after penalties: ordinal * max(0, B) * sync (paper); rating.anchor (ordinal less the anchor's), weights.own_data and score_ema change it (ours)"),
        ("penalties", pa.list_(pa.string()), False,
         "penalties applied this window, e.g. [\"missing x0.75\"]; empty if none"),
        ("inactive_windows", pa.int64(), False,
         "consecutive windows with no file in the put window (missing, too early, too late) or an internal "
         "error; any file that arrived resets it (invalid files are penalised instead); penalty.reset_after "
         "of them delete the rating"),
        ("last_evaluated_window", pa.int64(), True, "last window the peer was scored in; null if never"),
        ("banned_until", pa.int64(), True, "the peer is barred until this window (copying); null if not"),
        ("rated_in_match", pa.bool_(), False, "whether the peer took part in this window's OpenSkill match"),
        ("mu_before", pa.float64(), True, "mu before this window; null for a peer seen for the first time"),
        ("sigma_before", pa.float64(), True, "sigma before this window; null for a new peer"),
        ("final_score_before", pa.float64(), True, "F before this window; null for a new peer"),
        ("miss_history", pa.list_(pa.bool_()), False,
         "templar-2026 rules: the last rules.miss_history windows the peer owed a file, oldest first, "
         "true = missing or invalid; empty while those rules are off"),
        ("consecutive_misses", pa.int64(), False,
         "templar-2026 rules: missing or invalid files in a row (sets the escalating cut); 0 while off"),
        ("negative_history", pa.list_(pa.bool_()), False,
         "templar-2026 rules: the last rules.negative_history evaluations, oldest first, true = negative "
         "gradient score; empty while those rules are off"),
        ("consecutive_negatives", pa.int64(), False,
         "templar-2026 rules: negative evaluations in a row; at rules.negative_streak the peer is "
         "excluded from the gather set until a positive one; 0 while off"),
        ("rules_fired", pa.list_(pa.string()), False,
         "templar-2026 rules that fired for the peer this window, in words, e.g. "
         "[\"cut x0.5: second missing file in a row\"]; empty if none"),
    ],
    "weights": [
        WINDOW_ID,
        ("uid", pa.int64(), False, "peer uid"),
        ("weight", pa.float64(), False, "w = F ** p / sum F ** p over peers with F > 0"),
        ("set_on_chain", pa.bool_(), False, "whether weights were sent to the chain in this window"),
        ("set_at_block", pa.int64(), True, "block at which they were sent; null if not sent"),
        ("chain_success", pa.bool_(), True, "the chain's answer; null if not sent"),
        ("chain_message", pa.string(), True, "the chain's message (error code or extrinsic); null if not sent"),
    ],
}

TABLES: tuple[str, ...] = tuple(_SPECS)
"""Table names, in the order `write_window` writes them (`windows` is moved last there)."""

SCHEMAS: dict[str, pa.Schema] = {
    name: pa.schema([pa.field(col, typ, nullable=nullable) for col, typ, nullable, _ in cols])
    for name, cols in _SPECS.items()
}
DESCRIPTIONS: dict[str, dict[str, str]] = {
    name: {col: doc for col, _, _, doc in cols} for name, cols in _SPECS.items()
}

SORT_KEYS: dict[str, tuple[str, ...]] = {
    "windows": (),
    "submissions": ("uid", "key"),
    "verdicts": ("uid", "stage"),
    "scores": ("uid",),
    "ratings": ("uid",),
    "weights": ("uid",),
}
"""Rows are stored in this order, so a rerun that yields the same rows writes the same file."""

UNIQUE_KEYS: dict[str, tuple[str, ...]] = {
    "submissions": ("uid", "key"),
    "scores": ("uid",),
    "ratings": ("uid",),
    "weights": ("uid",),
}
"""At most one row per key and window (verdicts may hold one row per stage for a uid)."""

VOLATILE: dict[str, frozenset[str]] = {"windows": frozenset({"created_at", "timings_json"})}
"""Columns that describe the run rather than its result: ignored when a rerun is compared."""

ALLOWED_VALUES: dict[tuple[str, str], frozenset[object]] = {
    ("verdicts", "blame"): frozenset({"peer", "validator", "infrastructure", "none"}),
    ("scores", "indicator"): frozenset({1, 0, -1}),
}
JSON_COLUMNS: dict[tuple[str, str], type] = {
    ("windows", "config_json"): dict, ("windows", "timings_json"): dict,
    ("windows", "plan_json"): dict, ("windows", "gather_schedule_json"): list,
}
"""Text columns that must parse as JSON of this kind (object or array)."""
SHA256_HEX = frozenset({("windows", "checkpoint_before"), ("windows", "checkpoint_after"),
                        ("submissions", "content_hash")})
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


_SQL_NAMES = {pa.int64(): "BIGINT", pa.int8(): "TINYINT", pa.float64(): "DOUBLE", pa.string(): "VARCHAR",
              pa.bool_(): "BOOLEAN", _TS: "TIMESTAMPTZ"}


def sql_type(typ: pa.DataType) -> str:
    """The DuckDB name of a column type, as a query over the views sees it."""
    if pa.types.is_list(typ):
        return sql_type(typ.value_type) + "[]"
    return _SQL_NAMES[typ]


def file_schema(table: str) -> pa.Schema:
    """The schema stored inside a Parquet file: the table's without `window_id`."""
    schema = SCHEMAS[table]
    return schema.remove(schema.get_field_index("window_id"))


class SchemaError(ValueError):
    """Rows do not fit a table's schema; the message names the table, the column and the problem."""


Rows = list[dict[str, Any]] | pl.DataFrame


def conform(table: str, window_id: int, rows: Rows) -> pa.Table:
    """Check rows against the table's schema and return them typed and sorted, without `window_id`.

    Strict on purpose: every column must be given (None where nullable), none may be extra, and a
    value is never silently converted to another kind (1.5 is not an int, True is not a number).
    Naive timestamps are taken as UTC. A `window_id` column is accepted if it equals the window.
    """
    if table not in SCHEMAS:
        raise KeyError(f"unknown audit table {table!r}; tables are {', '.join(TABLES)}")
    target = file_schema(table)
    columns = _columns(table, rows)
    if columns is None:
        return target.empty_table()
    ids = columns.pop("window_id", None)
    if ids is not None and (not pa.types.is_integer(ids.type) or ids.null_count
                            or pc.any(pc.not_equal(ids, window_id)).as_py()):
        raise SchemaError(f"{table}: column window_id must equal the window being written ({window_id})")
    missing, extra = set(target.names) - set(columns), set(columns) - set(target.names)
    if missing or extra:
        raise SchemaError(f"{table}: missing columns {sorted(missing) or 'none'}; unknown columns {sorted(extra) or 'none'}")
    data = pa.Table.from_arrays([_coerce(table, f, columns[f.name]) for f in target], schema=target)
    _check_values(table, data)
    keys = SORT_KEYS[table]
    return data.sort_by([(k, "ascending") for k in keys]) if keys else data


def _columns(table: str, rows: Rows) -> dict[str, pa.Array] | None:
    if isinstance(rows, pl.DataFrame):
        return {name: rows.get_column(name).to_arrow() for name in rows.columns}
    if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
        raise SchemaError(f"{table}: rows must be a list of dicts or a polars DataFrame, got {type(rows).__name__}")
    if not rows:
        return None
    names = list(rows[0])
    for i, row in enumerate(rows):
        if set(row) != set(names):
            odd = sorted(set(row) ^ set(names))
            raise SchemaError(f"{table}: row {i} has other columns than row 0 (differ in {odd})")
    out = {}
    for name in names:
        try:
            out[name] = pa.array([row[name] for row in rows])
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise SchemaError(f"{table}.{name}: values of mixed or unsupported types ({exc})") from exc
    return out


def _compatible(src: pa.DataType, dst: pa.DataType) -> bool:
    if pa.types.is_null(src):
        return True
    if pa.types.is_integer(dst):
        return pa.types.is_integer(src)
    if pa.types.is_floating(dst):
        return pa.types.is_integer(src) or pa.types.is_floating(src)
    if pa.types.is_string(dst):
        return pa.types.is_string(src) or pa.types.is_large_string(src) or pa.types.is_string_view(src)
    if pa.types.is_timestamp(dst):
        return pa.types.is_timestamp(src)
    if pa.types.is_list(dst):
        lists = pa.types.is_list(src) or pa.types.is_large_list(src)
        return lists and _compatible(src.value_type, dst.value_type)
    return src == dst


def _coerce(table: str, field: pa.Field, values: pa.Array) -> pa.Array:
    where = f"{table}.{field.name}"
    if not _compatible(values.type, field.type):
        raise SchemaError(f"{where}: expected {sql_type(field.type)} ({field.type}), got {values.type}")
    try:
        out = values.cast(field.type, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SchemaError(f"{where}: cannot store the values as {field.type} ({exc})") from exc
    if not field.nullable and out.null_count:
        first = pc.index(pc.is_null(out), True).as_py()
        raise SchemaError(f"{where}: {out.null_count} null value(s) (first at row {first}) but the column is not nullable")
    if pa.types.is_list(field.type) and pc.list_flatten(out).null_count:
        raise SchemaError(f"{where}: a list holds a null item")
    return out


def _check_values(table: str, data: pa.Table) -> None:
    for (name, column), allowed in ALLOWED_VALUES.items():
        if name != table:
            continue
        bad = {v for v in data.column(column).to_pylist() if v is not None and v not in allowed}
        if bad:
            raise SchemaError(f"{table}.{column}: values {sorted(bad, key=str)} not in {sorted(allowed, key=str)}")
    for name, column in JSON_COLUMNS.keys() | SHA256_HEX:
        if name == table:
            _check_format(table, column, data.column(column).to_pylist())
    keys = UNIQUE_KEYS.get(table)
    if keys and data.num_rows:
        frame = pl.from_arrow(data.select(list(keys)))
        dupes = frame.filter(frame.is_duplicated())
        if dupes.height:
            raise SchemaError(f"{table}: more than one row per {keys} in a window, e.g. {dupes.row(0, named=True)}")


def _check_format(table: str, column: str, values: list[Any]) -> None:
    for row, value in enumerate(values):
        if value is None:
            continue
        if (table, column) in SHA256_HEX and not _HEX64.match(value):
            raise SchemaError(f"{table}.{column}: row {row} is not a lowercase sha256 hex digest: {value!r}")
        kind = JSON_COLUMNS.get((table, column))
        if kind is not None:
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError as exc:
                raise SchemaError(f"{table}.{column}: row {row} is not valid JSON ({exc})") from exc
            if not isinstance(parsed, kind):
                raise SchemaError(f"{table}.{column}: row {row} must be a JSON {'object' if kind is dict else 'array'}")
