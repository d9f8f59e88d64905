"""The local network's end-of-run report: who got paid and why, with the manifest beside it.

The manifest (each uid's behaviour) is ground truth known only to the local network; the
validator never reads it. The report joins it with the audit tables after the fact.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from gauntlet.audit.query import connect


def _manifest(network: Path) -> pl.DataFrame:
    peers = json.loads((network / "manifest.json").read_text())["peers"]
    return pl.DataFrame([{"uid": p["uid"], "behaviour": p["behaviour"]} for p in peers],
                        schema={"uid": pl.Int64, "behaviour": pl.Utf8})


def peer_summary(audit_root: Path, network: Path) -> tuple[pl.DataFrame, int]:
    """One row per peer over all recorded windows, and the last window's id."""
    con = connect(audit_root)
    last = con.sql("SELECT max(window_id) FROM windows").fetchall()[0][0]
    if last is None:
        raise FileNotFoundError(f"no validated window under {audit_root}")
    verdicts = con.sql("""
        SELECT uid, string_agg(reason || ' ' || n, ', ' ORDER BY n DESC, reason) AS verdicts
        FROM (SELECT uid, reason, count(*) AS n FROM verdicts GROUP BY uid, reason) GROUP BY uid
    """).pl()
    last_rows = con.sql("""
        SELECT r.uid, r.final_score, r.moving_average AS "B", r.ordinal, w.weight
        FROM ratings r JOIN weights w USING (window_id, uid) WHERE r.window_id = ?
    """, params=[last]).pl()
    table = (_manifest(network).join(verdicts, on="uid", how="left").join(last_rows, on="uid", how="left")
             .sort(["weight", "uid"], descending=[True, False], nulls_last=True))
    return table, last


def honest_share(table: pl.DataFrame) -> float:
    total = table["weight"].fill_null(0).sum()
    honest = table.filter(pl.col("behaviour") == "honest")["weight"].fill_null(0).sum()
    return honest / total if total > 0 else 0.0


def render(audit_root: Path, network: Path) -> str:
    table, last = peer_summary(audit_root, network)
    with pl.Config(tbl_rows=200, tbl_cols=20, tbl_width_chars=200, fmt_str_lengths=60, tbl_hide_dataframe_shape=True):
        text = str(table.with_columns(pl.col("final_score", "B", "ordinal", "weight").round(4)))
    share = honest_share(table)
    return "\n".join([
        f"Peers after window {last} (behaviour from the local network's manifest; the validator never saw it):",
        text,
        f"Share of window {last}'s weight that went to honest miners: {share:.1%}",
        "(`scaled` and the first `sybil` upload honestly computed updates, so they may be paid too;"
        " normalisation removes the scaling, and the sybil's twins are caught as copies.)",
        "",
        "Look further:",
        f"  gauntlet audit --root {audit_root} \"SELECT uid, reason, detail FROM verdicts WHERE reason <> 'ok' ORDER BY window_id DESC, uid LIMIT 20\"",
        f"  gauntlet explain --root {audit_root} --window {last} --uid <UID>",
        f"  gauntlet replay --root {audit_root} --window {last}",
        "  make ui   # the Prefect UI on http://127.0.0.1:4200: every window's flow run, tasks and artifacts",
    ])
