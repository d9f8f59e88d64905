"""`gauntlet status`: is this validator healthy and caught up? One screen, or JSON, and an exit code.

It reads only the chain (the current block) and the audit tables, so it answers the same
whether the validator runs under Prefect, from the command line, or not at all, and it can
serve as a container's health check: exit 0 when the validator is at most
`validator.max_lag_windows` windows behind the newest window ready to validate, 1 when it is
further behind or the chain cannot be read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import polars as pl

from gauntlet.audit.store import AuditStore
from gauntlet.chain import ChainError, open_chain
from gauntlet.chain.base import Chain
from gauntlet.clock import closed_window, window_of
from gauntlet.config import GauntletConfig

FAULT_BLAME = ("validator", "infrastructure")
"""Verdict blames that are the validator's own problem rather than the peer's."""


@dataclass(frozen=True)
class Status:
    block: int | None
    chain_window: int | None
    ready_window: int | None
    """The newest window the chain allows validating (None before the first)."""
    last_validated: int | None
    lag: int | None
    """Windows ready but not validated after the newest validated one; None if the chain is unreadable."""
    max_lag: int
    last_weights: dict | None
    """The newest window whose weights were sent: window, block, success, message, peers."""
    failed_windows: list[dict] = field(default_factory=list)
    """Recent windows (from the first validated one) with no audit rows, or whose weights the chain refused."""
    peers: dict[int, dict[str, int]] = field(default_factory=dict)
    """uid -> {reason: windows} over the recent windows (a peer's worst verdict in each window)."""
    faults: list[dict] = field(default_factory=list)
    """Verdicts blamed on the validator or the infrastructure in the recent windows."""
    chain_error: str | None = None

    @property
    def healthy(self) -> bool:
        return self.chain_error is None and self.lag is not None and self.lag <= self.max_lag


def _last_weights(store: AuditStore, done: list[int]) -> dict | None:
    for window in reversed(done):
        rows = store.read("weights", window_id=window).filter(pl.col("set_on_chain"))
        if rows.height:
            row = rows.row(0, named=True)
            return {"window": window, "block": row["set_at_block"], "success": row["chain_success"],
                    "message": row["chain_message"], "peers": int((rows["weight"] > 0).sum())}
    return None


def _failures(store: AuditStore, done: list[int], recent: list[int]) -> list[dict]:
    """Gaps between validated windows (never completed) and refused weights, oldest first."""
    out = []
    validated = set(done)
    for window in range(recent[0], recent[-1] + 1) if recent else ():
        if window not in validated:
            partial = store.path("verdicts", window).is_file()
            why = "stopped while writing its audit rows" if partial else "no audit rows: failed or skipped"
            out.append({"window": window, "why": why})
            continue
        answer = store.read("weights", window_id=window).filter(pl.col("set_on_chain") & ~pl.col("chain_success"))
        if answer.height:
            out.append({"window": window, "why": f"weights refused: {answer['chain_message'][0]}"})
    return out


def _verdicts(store: AuditStore, recent: list[int]) -> tuple[dict[int, dict[str, int]], list[dict]]:
    if not recent:
        return {}, []
    rows = pl.from_arrow(store.dataset("verdicts", windows=recent).to_table())
    worst = (rows.with_columns((pl.col("reason") != "ok").alias("bad"))
             .sort(["window_id", "uid", "bad"], descending=[False, False, True])
             .unique(["window_id", "uid"], keep="first", maintain_order=True))
    peers: dict[int, dict[str, int]] = {}
    for uid, reason, count in worst.group_by(["uid", "reason"]).len().sort(["uid", "reason"]).iter_rows():
        peers.setdefault(int(uid), {})[reason] = int(count)
    faults = rows.filter(pl.col("blame").is_in(FAULT_BLAME)).sort(["window_id", "uid"])
    return peers, [{"window": r["window_id"], "uid": r["uid"], "reason": r["reason"], "detail": r["detail"]}
                   for r in faults.iter_rows(named=True)]


def collect(cfg: GauntletConfig, chain: Chain, store: AuditStore, last_n: int = 10) -> Status:
    """The validator's state from the chain's clock and its audit tables (the last `last_n` windows)."""
    if last_n < 1:
        raise ValueError(f"last_n must be >= 1, got {last_n}")
    done = store.windows()
    last = done[-1] if done else None
    try:
        block, error = chain.block(), None
    except ChainError as exc:
        block, error = None, f"{exc.reason}: {exc}"
    ready = None if block is None else closed_window(block, cfg.chain)
    lag = None if block is None else (0 if ready is None else ready - (cfg.chain.start_window - 1 if last is None else last))
    recent = [] if last is None else list(range(max(done[0], last - last_n + 1), last + 1))
    peers, faults = _verdicts(store, [w for w in recent if w in set(done)])
    return Status(block, None if block is None else window_of(block, cfg.chain.blocks_per_window), ready, last,
                  max(lag, 0) if lag is not None else None, cfg.validator.max_lag_windows,
                  _last_weights(store, done), _failures(store, done, recent), peers, faults, error)


def render(status: Status) -> str:
    """The status as a few lines of text for an operator."""
    head = (f"chain: unreadable ({status.chain_error})" if status.chain_error else
            f"chain: block {status.block}, window {status.chain_window}; ready to validate: {status.ready_window}")
    lag = "unknown" if status.lag is None else f"{status.lag} window(s) behind (max {status.max_lag})"
    lines = [head, f"last validated window: {status.last_validated}; {lag}: {'OK' if status.healthy else 'BEHIND'}"]
    w = status.last_weights
    lines.append("last weights: none set" if w is None else
                 f"last weights: window {w['window']} at block {w['block']}, {w['peers']} peers: "
                 f"{'accepted' if w['success'] else 'REFUSED'} ({w['message']})")
    lines.append("failed windows: " + ("none" if not status.failed_windows else
                                       "; ".join(f"{f['window']}: {f['why']}" for f in status.failed_windows)))
    lines.append("peers (worst verdict per window):" if status.peers else "peers: none recorded")
    lines += [f"  uid {uid}: " + ", ".join(f"{r} {n}" for r, n in counts.items()) for uid, counts in status.peers.items()]
    lines.append("validator faults: " + ("none" if not status.faults else ""))
    lines += [f"  window {f['window']} uid {f['uid']} {f['reason']}: {f['detail']}" for f in status.faults]
    return "\n".join(lines)


def to_json(status: Status) -> str:
    return json.dumps({**asdict(status), "healthy": status.healthy}, indent=2, default=str)


def run_status(cfg: GauntletConfig, as_json: bool = False, last_n: int = 10) -> tuple[str, int]:
    """(text or JSON, exit code): 0 when healthy, 1 when behind or the chain is unreadable."""
    status = collect(cfg, open_chain(cfg.chain), AuditStore(cfg.audit.root), last_n)
    return (to_json(status) if as_json else render(status)), (0 if status.healthy else 1)
