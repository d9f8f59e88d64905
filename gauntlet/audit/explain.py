"""`gauntlet explain`: why a peer got what it got in one window, in plain words.

Written for the miner who asks "why did uid 7 get 0 in window 1200": every verdict with the
party blamed and its measured detail, the four losses and what they mean, the indicator and the
moving average, the rating before and after, the penalties, the final score and the weight, then
the same one-line summary for its previous windows. The thresholds quoted are the ones the
validator ran with (the window's stored config), not today's defaults.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gauntlet.audit.query import connect
from gauntlet.audit.store import AuditStore
from gauntlet.verdicts import Reason

Row = dict[str, Any]

BLAME = {
    "none": "accepted",
    "peer": "the peer's fault",
    "validator": "the validator's own fault, not held against the peer",
    "infrastructure": "an infrastructure fault (storage, network), not held against the peer",
}
CONSEQUENCE = {
    Reason.MISSING: "no file was found, so the peer had no submission this window",
    Reason.TOO_EARLY: "a file uploaded before t_min (judged by the object store's LastModified) counts as no submission",
    Reason.TOO_LATE: "a file uploaded after t_max (judged by the object store's LastModified) counts as no submission",
    Reason.MALFORMED: "the file does not follow the submission format, so it could not be used",
    Reason.NON_FINITE: "the file holds NaN or Inf values, so it could not be used",
    Reason.DESYNCED: "the peer's model has drifted too far from the validator's (sync probe)",
    Reason.COPIED: ("its update is a copy of another peer's; the later uploader is blamed, and both when no trusted "
                    "time orders them"),
    Reason.BANNED: "the peer is barred (for copying, or by the 2026 naughty list) until its bar ends",
    Reason.UNTRUSTED_TIME: ("its upload time came only from its own server, so it cannot be timed: store files with a "
                            "provider on storage.trusted_time_hosts"),
    Reason.EQUIVOCATED: "two reads of its file gave different bytes: it serves different content to different readers",
    Reason.INTERNAL_ERROR: ("the validator failed on this peer's data (our fault): no penalty, but no pay for unverified "
                            "work, and the window counts towards inactivity"),
    Reason.VALIDATOR_FAULT: "the validator's own state was at fault: nobody is penalised",
    Reason.INFRASTRUCTURE: "a storage outage corroborated by other peers: nobody is penalised",
}


class AuditLookupError(LookupError):
    """The window or the uid has no audit rows; the message says what does exist."""


def explain(root: Path | str, uid: int, window: int, history: int = 5) -> str:
    """The whole story of `uid` in `window`, then one line for each of its last `history` windows."""
    if history < 0:
        raise ValueError(f"history must be >= 0, got {history}")
    store = AuditStore(root)
    if not store.has_window(window):
        done = store.windows()
        known = f"windows {done[0]}..{done[-1]} ({len(done)} complete)" if done else "no windows at all"
        raise AuditLookupError(f"window {window} has no complete audit rows under {store.root}; it holds {known}")
    rows = {t: store.read(t, window).filter(uid=uid).to_dicts() for t in ("submissions", "verdicts", "scores", "ratings", "weights")}
    if not any(rows.values()):
        uids = store.read("ratings", window)["uid"].to_list()
        raise AuditLookupError(
            f"uid {uid} has no rows in window {window}: the validator did not know it as a peer then "
            f"(uids with ratings in that window: {_span(uids)})"
        )
    win = store.read("windows", window).row(0, named=True)
    cfg = json.loads(win["config_json"])
    weights = store.read("weights", window)
    lines = [_header(uid, win)]
    lines += _submission(rows["submissions"], win)
    lines += _verdicts(rows["verdicts"])
    copied = any(v["reason"] == Reason.COPIED for v in rows["verdicts"])
    lines += _scores(rows["scores"], cfg, copied)
    anchor = win["anchor_mu"] - 3 * win["anchor_sigma"] if win.get("anchor_mu") is not None else None
    lines += _rating(rows["ratings"], window, cfg.get("weights", {}), anchor, cfg.get("rating", {}).get("anchor"))
    lines += _weight(rows["weights"], float(weights["weight"].sum()), cfg)
    lines += _history(store, uid, window, history)
    return "\n".join(lines) + "\n"


def _header(uid: int, win: Row) -> str:
    width = win["t_max"] - win["t_min"]
    return (f"uid {uid} in window {win['window_id']} (blocks {win['first_block']}-{win['last_block']}; put window "
            f"{_iso(win['t_min'])} to {_iso(win['t_max'])}, {width:.1f} s; validator {win['validator_version']})")


def _submission(rows: list[Row], win: Row) -> list[str]:
    out = ["", "Submission"]
    if not rows:
        return out + ["  the validator did not look for a file from this peer"]
    for row in rows:
        if row["last_modified"] is None:
            out.append(f"  {row['key']}: not found in the peer's bucket")
            continue
        t = row["last_modified"].timestamp()
        where = (f"{win['t_min'] - t:.1f} s before t_min" if t < win["t_min"] else
                 f"{t - win['t_max']:.1f} s after t_max" if t > win["t_max"] else f"{t - win['t_min']:.1f} s after t_min")
        out.append(f"  {row['key']}: {row['size'] / 1e6:.2f} MB, LastModified {_iso(t)} ({where})")
        if row["archived_path"]:
            out.append(f"  kept for replays at {row['archived_path']}")
    return out


def _verdicts(rows: list[Row]) -> list[str]:
    out = ["", "Verdicts"]
    for row in rows:
        out.append(f"  {row['stage']}: {row['reason']} ({BLAME.get(row['blame'], row['blame'])}): {row['detail']}")
        consequence = CONSEQUENCE.get(row["reason"])
        if consequence:
            out.append(f"    -> {consequence}")
    return out if rows else out + ["  none recorded"]


def _scores(rows: list[Row], cfg: Row, copied: bool) -> list[str]:
    out = ["", "Scores"]
    if not rows:
        return out + ["  no scores: only files that pass the filter are checked and scored"]
    row = rows[0]
    if row["loss_own_before"] is None and row.get("scored_exactly") is False:
        out.append(f"  screened, not scored exactly: s_k estimated to first order as {_pct(row['score_estimate'])}, "
                   f"calibrated to {_pct(row['gradient_score'])}; its B is unchanged this window")
    elif row["loss_own_before"] is None:
        out.append("  not evaluated by loss in this window (not chosen, or its file failed a check)")
    else:
        out.append(f"  loss on its own pages:    {row['loss_own_before']:.4f} -> {row['loss_own_after']:.4f} "
                   f"(r_own = {_pct(row['own_improvement'])})")
        out.append(f"  loss on random pages:     {row['loss_rand_before']:.4f} -> {row['loss_rand_after']:.4f} "
                   f"(gradient score s_k = {_pct(row['gradient_score'])})")
    out += _indicator(row, cfg.get("uniqueness", {}))
    if row["sync_score"] is not None:
        out.append(f"  sync score {row['sync_score']:.3f} ({_num(row['steps_behind'], '.2f')} steps behind the validator)")
    out += _overlap(row, cfg.get("uniqueness", {}), copied)
    return out


def _indicator(row: Row, uq: Row) -> list[str]:
    b, avg = row["indicator"], row["moving_average"]
    sequential = row.get("own_batches") is not None
    out = _sequential(row, uq) if sequential else _margin_rule(b, float(uq.get("own_margin", 0.0)))
    if avg is not None:
        out.append(f"  moving average B = {avg:.4f} after this window (F is 0 while B <= 0)")
    return out


def _margin_rule(b: int | None, margin: float) -> list[str]:
    rule = "r_own > s_k" if margin == 0 else f"r_own > s_k + {margin:g} x |s_k|"
    if b == 1:
        return [f"  indicator b = +1: the update helped its own pages clearly more than random ones ({rule}), "
                "as an update computed on its own data should"]
    if b == -1:
        return [f"  indicator b = -1: the update did not help its own pages clearly more than random ones "
                f"(not {rule}), the mark of a copied, generic or stale update"]
    return []


def _sequential(row: Row, uq: Row) -> list[str]:
    """The sequential own-data test's record: the difference, its bound, and the batches it took."""
    b, d, se, n = row["indicator"], row["own_difference"], row["own_std_error"], row["own_batches"]
    z, cap = uq.get("own_z", 2.0), uq.get("own_max_batches")
    margin = float(uq.get("own_margin", 0.0))
    what = "own per-batch improvement - random" + (f" - {margin:g} x |s_k|" if margin else "")
    seen = f"over {n} own batches: {what} = {_pct(d)} +- {z:g} x {_pct(se).lstrip('+')} (t = {d / se:+.2f})" \
        if se else f"over {n} own batches: {what} = {_pct(d)}"
    if b == 1 and d - z * se > 0:
        return [f"  indicator b = +1: {seen}; the lower bound is above 0, so the update helped its own pages "
                "more than random ones, as an update computed on its own data should"]
    if b == -1 and not d + z * se >= 0:  # a NaN difference is -1 too
        return [f"  indicator b = -1: {seen}; the upper bound is below 0, so the update did not help its own "
                "pages more than random ones, the mark of a copied, generic or stale update"]
    why = "B decays toward 0" if b == 0 else f"the difference leans {'for' if b > 0 else 'against'} own data"
    return [f"  indicator b = {b:+d}: {seen}; still undecided after {n} own batches (cap {cap}), "
            f"so b = {b:+d} ({why}; uniqueness.own_undecided = {uq.get('own_undecided')})"]


def _overlap(row: Row, uq: Row, copied: bool) -> list[str]:
    if row["max_overlap"] is None:
        return []
    overlap, partner = row["max_overlap"], row["overlap_with"]
    rules = [(uq.get("overlap_ban"), f"the later uploader is reset and barred for {uq.get('ban_windows')} windows"),
             (uq.get("overlap_reset"), "the later uploader's score is reset"),
             (uq.get("overlap_halve"), "the later uploader's score is halved")]
    hit = next((f">= {t:.2f}: {what}" for t, what in rules if t is not None and overlap >= t), None)
    if hit is None:
        note = f"below the {uq['overlap_halve']:.2f} threshold" if "overlap_halve" in uq else "no copy rule applied"
    else:
        note = hit + ("; this peer was judged the copier" if copied else "; this peer was not judged the copier")
    with_ = f" with uid {partner}" if partner is not None else ""
    return [f"  largest top-k overlap {overlap:.2f}{with_} ({note})"]


def _score_formula(weights: Row, anchored: bool = False) -> str:
    """How F was computed for a peer in the match, under the window's weights.own_data and score_ema
    (and, `anchored`, rating.anchor: the ordinal less the anchor's, A)."""
    ordinal = "(ordinal - A)" if anchored else "ordinal"
    now = f"{ordinal} x sync while B > 0, else 0" if weights.get("own_data") == "gate" else f"{ordinal} x max(0, B) x sync"
    ema = float(weights.get("score_ema") or 0.0)
    if ema == 0:
        return f"F = {now} for peers in the match; penalties multiply it"
    return (f"F = {ema:g} x F before + {1 - ema:g} x ({now}) for peers in the match (weights.score_ema); "
            "penalties multiply it")


def _rating(rows: list[Row], window: int, weights: Row | None = None, anchor: float | None = None,
            fraction: float | None = None) -> list[str]:
    out = ["", "Rating"]
    if not rows:
        return out + ["  no rating row (the peer was not known to the validator's state)"]
    r = rows[0]
    if r["mu_before"] is None:
        out.append("  first window this peer was rated in: it starts from the prior rating")
    before = r["mu_before"] is not None and r["sigma_before"] is not None
    ord_before = r["mu_before"] - 3 * r["sigma_before"] if before else None  # ordinal = mu - 3 sigma
    match = "took part in this window's match" if r["rated_in_match"] else "not in this window's match: rating unchanged by it"
    out.append(f"  mu {_num(r['mu_before'])} -> {r['mu']:.3f}, sigma {_num(r['sigma_before'])} -> {r['sigma']:.3f}, "
               f"ordinal {_num(ord_before)} -> {r['ordinal']:.3f} ({match})")
    out.append(f"  penalties: {_penalties(r)}")
    if r.get("rules_fired"):
        out.append("  2026 rules: " + "; ".join(r["rules_fired"]))
    if anchor is not None:
        out.append(f"  anchor ordinal A = {anchor:.3f} (rating.anchor: a player scoring {_num(fraction, 'g')} x the "
                   f"window's median s_k; this peer's ordinal - A = {r['ordinal'] - anchor:.3f})")
    out.append(f"  final score F {_num(r['final_score_before'], '.4f')} -> {r['final_score']:.4f} "
               f"({_score_formula(weights or {}, anchor is not None)})")
    if r["banned_until"] is not None and r["banned_until"] > window:
        out.append(f"  barred until window {r['banned_until']}")
    if r["inactive_windows"]:
        out.append(f"  inactive for {r['inactive_windows']} window(s) in a row")
    return out


_MULTIPLIER = re.compile(r"(?<!B) x(\d+(?:\.\d*)?(?:e-?\d+)?)$")
"""A penalty note that multiplies F (`desynced x0.75`, `too_late x0.75`, `... final score x0.5`)."""


def _penalties(r: Row) -> str:
    """The penalty notes, and whether they changed anything: multipliers shrink positive values only.

    A multiplier (factor > 0) that leaves F <= 0 found F <= 0 already (F = ordinal x max(0, B) x sync
    is negative when the ordinal is), so it did nothing to F. A reset note (F = 0) did change it.
    """
    notes = list(r["penalties"] or [])
    if not notes:
        return "none"
    text = ", ".join(notes)
    factors = [float(m.group(1)) for m in map(_MULTIPLIER.search, notes) if m]
    if r["final_score"] > 0 or not factors or min(factors) <= 0 or any("reset" in n for n in notes):
        return text
    b = r["moving_average"]
    what = "F or B (both <= 0)" if b is not None and b <= 0 else "F (<= 0)"
    return f"{text} (no effect on {what}: penalties multiply positive values only)"


def _weight(rows: list[Row], total: float, cfg: Row) -> list[str]:
    out = ["", "Weight"]
    if not rows:
        return out + ["  no weight row"]
    w = rows[0]
    share = f" ({w['weight'] / total:.2%} of the total)" if total > 0 else ""
    out.append(f"  weight {w['weight']:.6f}{share}")
    if not w["set_on_chain"]:
        every = cfg.get("weights", {}).get("set_interval")
        return out + [f"  not sent to the chain this window{f' (weights are set every {every} windows)' if every else ''}"]
    answer = {True: "accepted", False: "refused", None: "no answer"}[w["chain_success"]]
    return out + [f"  set on chain at block {w['set_at_block']}: {answer} ({w['chain_message'] or 'no message'})"]


_HISTORY_SQL = """
WITH seen AS (SELECT window_id FROM verdicts WHERE uid = $uid
              UNION SELECT window_id FROM ratings WHERE uid = $uid
              ORDER BY window_id DESC LIMIT $n),
v AS (SELECT window_id, string_agg(reason, '+' ORDER BY stage) AS reasons FROM verdicts
      WHERE uid = $uid AND window_id IN (SELECT window_id FROM seen) GROUP BY window_id)
SELECT seen.window_id, v.reasons, s.gradient_score, s.own_improvement, s.indicator, r.moving_average,
       r.final_score, r.penalties, g.weight
FROM seen LEFT JOIN v USING (window_id)
LEFT JOIN scores s ON s.window_id = seen.window_id AND s.uid = $uid
LEFT JOIN ratings r ON r.window_id = seen.window_id AND r.uid = $uid
LEFT JOIN weights g ON g.window_id = seen.window_id AND g.uid = $uid
ORDER BY seen.window_id DESC
"""


def _history(store: AuditStore, uid: int, window: int, history: int) -> list[str]:
    rows = _history_rows(store, uid, window, history + 1)
    current = [r for r in rows if r["window_id"] == window]
    past = [r for r in rows if r["window_id"] < window][:history]
    out = ["", "Summary", f"  {summary_line(current[0])}"] if current else []
    if history:
        out += ["", f"Previous windows (last {history})"]
        out += [f"  {summary_line(r)}" for r in past] or ["  none: this is its first window in the audit tables"]
    return out


def _history_rows(store: AuditStore, uid: int, window: int, n: int) -> list[Row]:
    """The peer's last n windows up to `window`: first among the few windows just before (a peer
    usually has rows in every window), then, if it had gaps, among all of them."""
    done = [w for w in store.windows() if w <= window]
    for candidates in (done[-4 * n:], done):
        con = connect(store.root, windows=candidates)
        try:
            rows = con.sql(_HISTORY_SQL, params={"uid": uid, "n": n}).pl().to_dicts()
        finally:
            con.close()
        if len(rows) >= n or len(candidates) == len(done):
            return rows
    return rows


def summary_line(r: Row) -> str:
    """One window of one peer in a line: verdicts, s_k, r_own, b, B, F, penalties, weight."""
    parts = [f"window {r['window_id']}: {r['reasons'] or 'no verdict'}"]
    if r["gradient_score"] is not None:
        b = "n/a" if r["indicator"] is None else f"{r['indicator']:+d}"
        parts.append(f"s_k {_pct(r['gradient_score'])}, r_own {_pct(r['own_improvement'])}, b {b}")
    else:
        parts.append("not scored")
    parts.append(f"B {_num(r['moving_average'], '.4f')}, F {_num(r['final_score'], '.4f')}")
    if r["penalties"]:
        parts.append("penalties " + ", ".join(r["penalties"]))
    parts.append(f"weight {_num(r['weight'], '.6f')}")
    return "; ".join(parts)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.3%}"


def _num(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _span(uids: list[int]) -> str:
    uids = sorted(uids)
    if len(uids) > 12:
        return f"{len(uids)} uids, {uids[0]}..{uids[-1]}"
    return ", ".join(map(str, uids)) or "none"
