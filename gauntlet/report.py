"""The local network's end-of-run report: who got paid and why, and whether the model learned.

The manifest (each uid's behaviour) is ground truth known only to the local network; the
validator never reads it. The report joins it with the audit tables after the fact: one row per
behaviour with the reason each hostile peer earns nothing, the share of weight that went to
honest work, the validation loss per window, and a chart of both (`write_chart`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from gauntlet.audit.query import connect

HONEST_WORK = ("honest", "scaled")
"""Behaviours whose updates are honestly computed; the first uid of a sybil group is one too."""


def manifest_roster(network: Path) -> dict[int, str]:
    """uid -> behaviour, from the network's manifest.json."""
    path = Path(network) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{network} holds no manifest.json; it is not a local network folder")
    return {int(p["uid"]): str(p["behaviour"]) for p in json.loads(path.read_text())["peers"]}


def honest_work(roster: Mapping[int, str]) -> set[int]:
    """Uids that upload honestly computed updates: honest, scaled and the first sybil."""
    sybils = sorted(u for u, b in roster.items() if b == "sybil")
    return {u for u, b in roster.items() if b in HONEST_WORK} | set(sybils[:1])


@dataclass
class Report:
    roster: dict[int, str]
    weights: pl.DataFrame
    """window_id, uid, weight: every validated window."""
    last: pl.DataFrame
    """uid, weight, B, ordinal, final_score in the last window."""
    rejections: pl.DataFrame
    """uid, reason, n, detail (the latest): every verdict other than ok."""
    losses: dict[int, float] = field(default_factory=dict)
    """checkpoint window -> validation loss (the first is the model before any validated step)."""
    held_out: list[int] = field(default_factory=list)

    @property
    def windows(self) -> list[int]:
        return sorted(set(self.weights["window_id"].to_list()))

    def honest_share(self, window: int | None = None) -> float:
        """Share of a window's weight (default: the last) that went to honest work."""
        w = self.weights.filter(pl.col("window_id") == (self.windows[-1] if window is None else window))
        total = w["weight"].sum()
        honest = w.filter(pl.col("uid").is_in(sorted(honest_work(self.roster))))["weight"].sum()
        return float(honest / total) if total > 0 else 0.0


def load_report(audit_root: Path, network: Path) -> Report:
    con = connect(audit_root)
    last = con.sql("SELECT max(window_id) FROM windows").fetchall()[0][0]
    if last is None:
        raise FileNotFoundError(f"no validated window under {audit_root}")
    weights = con.sql("SELECT window_id, uid, weight FROM weights ORDER BY window_id, uid").pl()
    last_rows = con.sql("""
        SELECT r.uid, w.weight, r.moving_average AS "B", r.ordinal, r.final_score
        FROM ratings r JOIN weights w USING (window_id, uid) WHERE r.window_id = ?
    """, params=[last]).pl()
    rejections = con.sql("""
        SELECT uid, reason, count(*) AS n, arg_max(detail, window_id) AS detail
        FROM verdicts WHERE reason <> 'ok' GROUP BY uid, reason ORDER BY uid, n DESC, reason
    """).pl()
    return Report(manifest_roster(network), weights, last_rows, rejections)


def why_unpaid(report: Report, uid: int) -> str:
    """One peer's outcome in words: paid, or the reason it earns nothing."""
    row = report.last.filter(pl.col("uid") == uid)
    rejected = report.rejections.filter(pl.col("uid") == uid)
    weight = float(row["weight"][0]) if row.height else 0.0
    if weight > 0:
        return f"paid {weight:.1%}" + (" (honest work)" if uid in honest_work(report.roster) else "")
    if rejected.height:
        first = rejected.row(0, named=True)
        more = "".join(f", {r} x{n}" for r, n in zip(rejected["reason"][1:], rejected["n"][1:]))
        return f"{first['reason']} x{first['n']}{more}: {first['detail']}"
    if not row.height:
        return "no rating: never seen by the validator"
    b, ordinal = float(row["B"][0]), float(row["ordinal"][0])
    if b <= 0:
        return f"B = {b:.2f} <= 0: its update does not help its own pages more than random ones (own-data check)"
    return f"F = {float(row['final_score'][0]):.3g}: ranked low in the loss-score matches (ordinal {ordinal:.2f})"


def report_uids(report: Report, behaviour: str) -> list[int]:
    return sorted(u for u, b in report.roster.items() if b == behaviour)


def _uids(uids: list[int]) -> str:
    return ", ".join(map(str, uids)) if len(uids) < 4 or uids != list(range(uids[0], uids[-1] + 1)) \
        else f"{uids[0]}-{uids[-1]}"


def behaviour_table(report: Report) -> pl.DataFrame:
    """One row per behaviour: its uids, weight in the last window, mean over windows, outcome."""
    n_windows = max(1, len(report.windows))
    rows = []
    for name in dict.fromkeys(sorted(report.roster.values(), key=lambda b: (b != "honest", b))):
        uids = report_uids(report, name)
        last = report.last.filter(pl.col("uid").is_in(uids))["weight"].sum()
        mean = report.weights.filter(pl.col("uid").is_in(uids))["weight"].sum() / n_windows
        if name == "honest":
            unpaid = [u for u in uids if not why_unpaid(report, u).startswith("paid")]
            outcome = f"{len(uids) - len(unpaid)} of {len(uids)} paid in the last window" + "".join(
                f"; uid {u}: {why_unpaid(report, u).split(':')[0]}" for u in unpaid)
        else:
            outcome = "; ".join(f"uid {u}: {why_unpaid(report, u)}" for u in uids)
        rows.append({"behaviour": name, "uids": _uids(uids), "weight (last)": round(float(last), 4),
                     "weight (mean)": round(float(mean), 4), "outcome": outcome})
    return pl.DataFrame(rows)


def loss_lines(report: Report) -> list[str]:
    if not report.losses:
        return ["Validation loss: not measured"]
    items = sorted(report.losses.items())
    out = [f"Validation loss on {len(report.held_out)} held-out pages (no peer trained on them), "
           f"by the checkpoint each window produced:"]
    out.append(f"  before window {items[0][0]}: {items[0][1]:.4f}")
    out += [f"  after window {w - 1}: {loss:.4f}" for w, loss in items[1:]]
    return out


def render(report: Report, chart: Path | None = None) -> str:
    """The report as terminal text."""
    last = report.windows[-1]
    with pl.Config(tbl_rows=100, tbl_cols=10, tbl_width_chars=220, fmt_str_lengths=150,
                   tbl_hide_dataframe_shape=True, tbl_formatting="ASCII_MARKDOWN", tbl_hide_column_data_types=True):
        table = str(behaviour_table(report))
    mean_share = sum(report.honest_share(w) for w in report.windows) / len(report.windows)
    return "\n".join([
        f"Who got paid and why: {len(report.roster)} peers, windows {report.windows[0]}-{last} "
        f"({len(report.windows)} validated); behaviours from the manifest, which the validator never saw.",
        table,
        f"Share of weight to honest work (honest, scaled, the first sybil): {report.honest_share():.1%} in "
        f"window {last}, {mean_share:.1%} on average over the windows.",
        "(`scaled` uploads an honest update x100, which normalisation neutralises; the first sybil's update is"
        " honest, its twins are caught as copies.)",
        *loss_lines(report),
        *([f"Chart (weight per peer by behaviour, validation loss): {chart}"] if chart else []),
    ])


def render_markdown(report: Report, chart: Path | None = None) -> str:
    """The same report for a Prefect artifact (a markdown table)."""
    table = behaviour_table(report)
    head = "| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns)
    body = ["| " + " | ".join(str(v).replace("|", "/") for v in row) + " |" for row in table.iter_rows()]
    return "\n".join([f"# Local network: windows {report.windows[0]}-{report.windows[-1]}", "", head, *body, "",
                      f"Share of weight to honest work in the last window: **{report.honest_share():.1%}**", "",
                      *(f"- {line.strip()}" for line in loss_lines(report)), "",
                      *([f"Chart: `{chart}`"] if chart else [])])


def look_further(audit_root: Path, report: Report) -> str:
    hostile = sorted(u for u, b in report.roster.items() if b != "honest")
    return "\n".join([
        "Look further:",
        f"  gauntlet audit --root {audit_root} \"SELECT uid, reason, detail FROM verdicts WHERE reason <> 'ok' "
        "ORDER BY window_id DESC, uid LIMIT 20\"",
        f"  gauntlet explain --root {audit_root} --window {report.windows[-1]} --uid {hostile[0] if hostile else 0}",
        f"  gauntlet replay --root {audit_root} --window {report.windows[-1]}",
        "  make ui   # the Prefect UI on http://127.0.0.1:4200: every window's flow run, tasks and artifacts",
    ])


def _colours(names: list[str]) -> dict[str, tuple]:
    """Honest peers green; every other behaviour its own colour (tab20 without its greens)."""
    from matplotlib import colormaps

    palette = [c for i, c in enumerate(colormaps["tab20"].colors) if i not in (4, 5)]
    others = [n for n in sorted(set(names)) if n != "honest"]
    colours = {n: palette[i % len(palette)] for i, n in enumerate(others)}
    return {"honest": colormaps["tab10"].colors[2], **colours}


def write_chart(report: Report, path: Path) -> Path:
    """A PNG: weight per peer over windows coloured by behaviour (top), validation loss (bottom)."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; the demo runs in terminals and CI
    from matplotlib import pyplot as plt

    colours = _colours(list(report.roster.values()))
    last = report.weights.filter(pl.col("window_id") == report.windows[-1])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8), height_ratios=[3, 2], constrained_layout=True)
    labelled: set[str] = set()
    for uid, name in sorted(report.roster.items()):
        series = report.weights.filter(pl.col("uid") == uid).sort("window_id")
        if series.is_empty():
            continue
        share = last.filter(pl.col("uid").is_in(report_uids(report, name)))["weight"].sum()
        top.plot(series["window_id"].to_list(), series["weight"].to_list(), marker="o", markersize=3,
                 color=colours[name], label=None if name in labelled else f"{name}: {share:.0%}",
                 alpha=0.85, linewidth=1.2 if name == "honest" else 2.0)
        labelled.add(name)
    top.set(title="Weight per peer after each window (one line per uid; unpaid peers lie on 0)",
            xlabel="window", ylabel="weight")
    top.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="weight at the end",
               title_fontsize=8)
    if report.losses:
        items = sorted(report.losses.items())
        bottom.plot([w - 1 for w, _ in items[1:]], [loss for _, loss in items[1:]], marker="o", color="black")
        bottom.axhline(items[0][1], color="grey", linestyle="--", label=f"before window {items[0][0]}")
        bottom.legend(fontsize=8)
    bottom.set(title=f"Validation loss on {len(report.held_out)} held-out pages after each window",
               xlabel="window", ylabel="loss")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
