"""Audit store at scale: 1,000 windows x 256 peers written by the store's own writer, then queries.

Writes all six tables of every window through `AuditStore.write_window` (validation, sorting,
fsync, atomic publication included) and times each window; then times typical queries as
medians over several runs, both end to end (`run_sql`: discovery of the files, a new locked
connection, the query; what `gauntlet audit` pays) and on one open connection (`connect` once).

Two references measured in the same run, as ratios: plain DuckDB `read_parquet` views (a glob per
table, no locks) over the same files, run alternately with the product's views (`read_parquet`
over the completed windows' files on a connection locked to the table folders; goal: at most
1.2x), and a bare `pyarrow.parquet.write_table` of the same tables (no validation, no fsync, no
atomic rename).
Data lives under benchmarks/.work/ (git-ignored); results go to benchmarks/results/audit.json.

Run: `.venv/bin/python -m benchmarks.bench_audit` (about 40 s on 2 cores).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow.parquet as pq

from gauntlet.audit import TABLES, AuditStore, conform, connect, explain, run_sql
from gauntlet.config import GauntletConfig

WINDOWS, PEERS, RUNS = 1000, 256, 7
HERE = Path(__file__).resolve().parent
WORK, RESULTS = HERE / ".work" / "audit", HERE / "results" / "audit.json"
REASONS = np.array(["ok", "too_late", "too_early", "missing", "desynced", "copied", "malformed"])
REASON_P = np.array([0.86, 0.04, 0.01, 0.04, 0.02, 0.02, 0.01])

QUERIES = {
    "point (one uid, one window)": "SELECT * FROM scores WHERE window_id = 500 AND uid = 17",
    "every rejection of one uid": (
        "SELECT window_id, stage, reason, detail FROM verdicts WHERE uid = 17 AND reason <> 'ok' ORDER BY window_id"),
    "top peers of the last 100 windows": (
        "SELECT uid, avg(final_score) AS mean_final FROM ratings "
        "WHERE window_id > (SELECT max(window_id) FROM windows) - 100 GROUP BY uid ORDER BY mean_final DESC LIMIT 10"),
    "weight share over time": (
        "SELECT from_window, uid, total / sum(total) OVER (PARTITION BY from_window) AS share FROM "
        "(SELECT window_id // 100 * 100 AS from_window, uid, sum(weight) AS total FROM weights GROUP BY ALL) "
        "ORDER BY from_window, share DESC"),
    "full scan (scores, 5 columns)": (
        "SELECT count(*), sum(loss_own_before), sum(loss_rand_after), avg(gradient_score), max(max_overlap) FROM scores"),
}


def synthetic(window: int, rng: np.random.Generator, config_json: str) -> dict[str, pl.DataFrame]:
    """One window of 256 peers with a realistic mix of verdicts, as polars frames."""
    uid = np.arange(PEERS, dtype=np.int64)
    reason = rng.choice(REASONS, size=PEERS, p=REASON_P)
    scored = np.isin(reason, ["ok", "copied"])
    t_min = 1.7e9 + 96.0 * window
    up = t_min + rng.uniform(0, 10, PEERS) + np.where(reason == "too_late", 13, 0) - np.where(reason == "too_early", 15, 0)
    present = reason != "missing"
    loss = 4.0 - window * 1e-3 + rng.normal(0, 0.01, PEERS)
    own_after, rand_after = loss - rng.uniform(0, 0.05, PEERS), loss + 0.1 - rng.uniform(0, 0.03, PEERS)
    r_own, s_k = (loss - own_after) / loss, (loss + 0.1 - rand_after) / (loss + 0.1)
    b_avg = np.clip(rng.normal(0.2, 0.1, PEERS), -1, 1)
    mu, sigma = 25 + rng.normal(0, 3, PEERS), np.full(PEERS, 3.0)
    final = np.where(scored, np.maximum(0, (mu - 3 * sigma) * np.maximum(b_avg, 0)), 0.0)
    weight = final**2 / max((final**2).sum(), 1e-8)
    due = window % 50 == 0
    hex_ = [f"{window:032x}{u:032x}" for u in range(PEERS)]
    s = scored

    def opt(values: np.ndarray, mask: np.ndarray) -> pl.Series:
        return pl.Series(values).scatter(np.flatnonzero(~mask), None)

    frames = {
        "submissions": pl.DataFrame({
            "uid": uid, "key": [f"gauntlet/v1/gradients/{window:08d}/{u}.safetensors" for u in uid],
            "size": opt(np.full(PEERS, 5_000_000), present),
            "last_modified": (opt(up, present) * 1e6).cast(pl.Int64).cast(pl.Datetime("us", "UTC")),
            "content_hash": pl.Series(hex_).scatter(np.flatnonzero(~present), None),
            "archived_path": pl.Series([f"archive/{window}/{u}" for u in uid]).scatter(np.flatnonzero(~present), None),
            "time_trusted": present, "provider": pl.Series(["*.r2.cloudflarestorage.com"] * PEERS, dtype=pl.String)}),
        "verdicts": pl.DataFrame({
            "uid": uid, "stage": np.where(reason == "copied", "copy", "filter"), "reason": reason,
            "detail": [f"synthetic {r} for uid {u}" for r, u in zip(reason, uid)],
            "blame": np.where(reason == "ok", "none", "peer")}),
        "scores": pl.DataFrame({
            "uid": uid, "loss_own_before": opt(loss, s), "loss_own_after": opt(own_after, s),
            "loss_rand_before": opt(loss + 0.1, s), "loss_rand_after": opt(rand_after, s),
            "gradient_score": opt(s_k, s), "own_improvement": opt(r_own, s),
            "indicator": opt(np.where(r_own > s_k, 1, -1).astype(np.int8), s), "moving_average": b_avg,
            "sync_score": opt(np.ones(PEERS), present), "steps_behind": opt(np.zeros(PEERS), present),
            "max_overlap": rng.uniform(0, 0.7, PEERS), "overlap_with": (uid + 1) % PEERS,
            "own_batches": pl.Series([None] * PEERS, dtype=pl.Int64),  # the margin rule: no sequential test
            "own_difference": pl.Series([None] * PEERS, dtype=pl.Float64),
            "own_std_error": pl.Series([None] * PEERS, dtype=pl.Float64),
            "score_estimate": opt(s_k * 1.01, s), "scored_exactly": opt(np.ones(PEERS, dtype=bool), s)}),
        "ratings": pl.DataFrame({
            "uid": uid, "mu": mu, "sigma": sigma, "ordinal": mu - 3 * sigma, "moving_average": b_avg,
            "sync_score": np.ones(PEERS), "final_score": final,
            "penalties": [[] if r == "ok" else [f"{r} x0.75"] for r in reason],
            "inactive_windows": np.where(present, 0, 1), "last_evaluated_window": opt(np.full(PEERS, window), s),
            "banned_until": opt(np.full(PEERS, window + 200), reason == "copied"), "rated_in_match": s,
            "mu_before": mu - 0.1, "sigma_before": sigma + 0.01, "final_score_before": final,
            "miss_history": pl.Series([[]] * PEERS, dtype=pl.List(pl.Boolean)),
            "consecutive_misses": np.zeros(PEERS, dtype=np.int64),
            "negative_history": pl.Series([[]] * PEERS, dtype=pl.List(pl.Boolean)),
            "consecutive_negatives": np.zeros(PEERS, dtype=np.int64),
            "rules_fired": pl.Series([[]] * PEERS, dtype=pl.List(pl.String))}),
        "weights": pl.DataFrame({
            "uid": uid, "weight": weight, "set_on_chain": np.full(PEERS, due),
            "set_at_block": pl.Series([8 * window + 17 if due else None] * PEERS, dtype=pl.Int64),
            "chain_success": pl.Series([True if due else None] * PEERS, dtype=pl.Boolean),
            "chain_message": pl.Series(["ok" if due else None] * PEERS, dtype=pl.String)}),
    }
    frames["windows"] = pl.DataFrame([{
        "first_block": 8 * window, "last_block": 8 * window + 7, "t_min": t_min, "t_max": t_min + 10,
        "block_hash": f"0x{window:064x}", "seed": window, "config_json": config_json,
        "checkpoint_before": f"{window:064x}", "checkpoint_after": f"{window + 1:064x}",
        "validator_version": "0.1.0", "validator_hotkey": "5Bench", "gather_uids": list(range(15)),
        "gather_schedule_json": "[]", "plan_json": "{}", "lr": 4e-4, "timings_json": "{}",
        "created_at": datetime.now(UTC), "internal_errors": 0, "sync_ema_json": None,
        "anchor_mu": 24.0, "anchor_sigma": 8.0}])
    return frames


def _median_s(fn, runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _paired_medians_s(first, second, runs: int = RUNS) -> tuple[float, float]:
    """Medians of two callables run alternately, so a busy machine's drift hits both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for fn, out in zip((first, second), times):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def write_all(store: AuditStore) -> dict[str, float]:
    rng, config_json = np.random.default_rng(0), GauntletConfig().to_json()
    build, write, bare = [], [], []
    scratch = WORK.parent / "bare"
    scratch.mkdir(parents=True, exist_ok=True)
    for window in range(WINDOWS):
        start = time.perf_counter()
        frames = synthetic(window, rng, config_json)
        mid = time.perf_counter()
        store.write_window(window, frames)
        write.append(time.perf_counter() - mid)
        build.append(mid - start)
        if window % 10 == 0:  # the reference: the same tables, typed, written bare
            tables = {t: conform(t, window, frames[t]) for t in TABLES}
            start = time.perf_counter()
            for t, data in tables.items():
                pq.write_table(data, scratch / f"{t}.parquet")
            bare.append(time.perf_counter() - start)
    shutil.rmtree(scratch)
    median = statistics.median(write)
    return {"write_window_median_ms": 1e3 * median, "write_window_p95_ms": 1e3 * float(np.percentile(write, 95)),
            "write_total_s": sum(write), "synthesis_median_ms": 1e3 * statistics.median(build),
            "bare_parquet_write_median_ms": 1e3 * statistics.median(bare),
            "writer_over_bare_ratio": median / statistics.median(bare)}


def native_views() -> duckdb.DuckDBPyConnection:
    """The reference: DuckDB's plain `read_parquet` views on an unlocked connection."""
    con = duckdb.connect(":memory:")
    for t in TABLES:
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{WORK}/{t}/window_id=*/part-0.parquet', "
                    "hive_partitioning = true, hive_types = {'window_id': BIGINT})")
    return con


def main() -> dict:
    shutil.rmtree(WORK, ignore_errors=True)
    store = AuditStore(WORK)
    figures: dict[str, object] = {"windows": WINDOWS, "peers": PEERS, "runs": RUNS, "cpu_count": os.cpu_count()}
    figures["write"] = write_all(store)
    figures["bytes_on_disk"] = sum(p.stat().st_size for p in WORK.rglob("*.parquet"))
    figures["rows"] = {t: run_sql(WORK, f"SELECT count(*) AS n FROM {t}").item() for t in ("windows", "scores", "ratings")}
    figures["connect_ms"] = 1e3 * _median_s(lambda: connect(WORK).close())
    con = connect(WORK)
    figures["query_end_to_end_ms"] = {name: 1e3 * _median_s(lambda q=q: run_sql(WORK, q)) for name, q in QUERIES.items()}
    native = native_views()
    paired = {name: _paired_medians_s(lambda q=q: con.sql(q).pl(), lambda q=q: native.sql(q).pl())
              for name, q in QUERIES.items()}
    figures["query_open_connection_ms"] = {name: 1e3 * p for name, (p, _) in paired.items()}
    figures["native_read_parquet_open_connection_ms"] = {name: 1e3 * n for name, (_, n) in paired.items()}
    figures["product_over_native_ratio"] = {
        name: figures["query_open_connection_ms"][name] / figures["native_read_parquet_open_connection_ms"][name]
        for name in QUERIES}
    native.close()
    figures["explain_ms"] = 1e3 * _median_s(lambda: explain(WORK, uid=17, window=900, history=5))
    figures["store_read_one_window_ms"] = 1e3 * _median_s(lambda: store.read("ratings", 500))
    figures["latest_ratings_ms"] = 1e3 * _median_s(store.latest_ratings)
    con.close()
    shutil.rmtree(WORK)  # 77 MB; the figures are what we keep
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
