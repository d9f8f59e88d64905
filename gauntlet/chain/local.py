"""`LocalChain`: a real ledger in one SQLite file, the embedded default of a local network.

Several processes (miners, the validator, a block producer) open the same file and see one
chain: WAL journaling, a busy timeout, and `BEGIN IMMEDIATE` around every write make their
writes serialise. Nothing is mocked: blocks are appended, weights are rate limited, commitments
need a registered hotkey, exactly as the flows and the miners would meet them on bittensor.

Block hashes are a blake2b chain from a genesis that depends only on the netuid, so the same
sequence of blocks has the same hashes in every run (the window's random seed comes from them).
Time: `produce_blocks(n)` stamps new blocks with the wall clock when they are produced (a
simulation may pass `at=` instead); `run_realtime` produces a block every `block_time_s`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gauntlet.chain.base import ChainError, Neuron, WeightsResult, check_commitment, to_u16

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (number INTEGER PRIMARY KEY, timestamp REAL NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS neurons (uid INTEGER PRIMARY KEY, hotkey TEXT UNIQUE NOT NULL, stake REAL NOT NULL,
    validator_permit INTEGER NOT NULL, registered_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS commitments (hotkey TEXT PRIMARY KEY, data TEXT NOT NULL, block INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS weights (id INTEGER PRIMARY KEY AUTOINCREMENT, hotkey TEXT NOT NULL,
    block INTEGER NOT NULL, uids TEXT NOT NULL, values_u16 TEXT NOT NULL, version_key INTEGER NOT NULL);
"""
_DEFAULTS = {"netuid": 3, "blocks_per_window": 8, "block_time_s": 12.0, "weights_rate_limit": 100}


@dataclass(frozen=True, slots=True)
class WeightsRecord:
    hotkey: str
    block: int
    uids: tuple[int, ...]
    weights_u16: tuple[int, ...]
    version_key: int


def _hash(parent: str, number: int) -> str:
    digest = hashlib.blake2b(bytes.fromhex(parent[2:]) + number.to_bytes(8, "little"), digest_size=32)
    return "0x" + digest.hexdigest()


class LocalChain:
    """Settings are fixed when the ledger is created; reopening with other values raises.

    `genesis_time` stamps block 0 of a new ledger (default: now); a simulation starts its clock there.
    """

    def __init__(self, path: str | Path, *, netuid: int | None = None, blocks_per_window: int | None = None,
                 block_time_s: float | None = None, weights_rate_limit: int | None = None,
                 genesis_time: float | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        asked = {"netuid": netuid, "blocks_per_window": blocks_per_window,
                 "block_time_s": block_time_s, "weights_rate_limit": weights_rate_limit}
        with self._write() as db:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)  # executescript would commit the open transaction
            stored = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if not stored:
                stored = {k: json.dumps(v if v is not None else _DEFAULTS[k]) for k, v in asked.items()}
                db.executemany("INSERT INTO meta VALUES (?, ?)", stored.items())
                genesis = "0x" + hashlib.blake2b(f"gauntlet-local/{json.loads(stored['netuid'])}".encode(),
                                                 digest_size=32).hexdigest()
                db.execute("INSERT INTO blocks VALUES (0, ?, ?)", (time.time() if genesis_time is None else genesis_time, genesis))
        settings = {k: json.loads(v) for k, v in stored.items()}
        for key, value in asked.items():
            if value is not None and value != settings[key]:
                raise ValueError(f"ledger {self.path} was created with {key}={settings[key]}, not {value}")
        self.netuid: int = settings["netuid"]
        self.blocks_per_window: int = settings["blocks_per_window"]
        self.block_time_s: float = settings["block_time_s"]
        self.weights_rate_limit: int = settings["weights_rate_limit"]

    def __repr__(self) -> str:
        return f"LocalChain({str(self.path)!r}, netuid={self.netuid})"

    # --- connections: one per call, so threads and forked processes never share one ---------
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[tuple]:
        db = self._connect()
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    # --- reads ------------------------------------------------------------------------------
    def block(self) -> int:
        return int(self._read("SELECT MAX(number) FROM blocks")[0][0])

    def _block_row(self, block: int) -> tuple[float, str]:
        rows = self._read("SELECT timestamp, hash FROM blocks WHERE number = ?", (block,))
        if not rows:
            raise ChainError(f"block {block} does not exist yet on {self} (head {self.block()})", "not_found")
        return rows[0]

    def block_timestamp(self, block: int) -> float:
        return float(self._block_row(block)[0])

    def block_hash(self, block: int) -> str:
        return str(self._block_row(block)[1])

    def metagraph(self) -> list[Neuron]:
        rows = self._read(
            "SELECT n.uid, n.hotkey, n.stake, n.validator_permit, COALESCE(MAX(w.block), 0) FROM neurons n "
            "LEFT JOIN weights w ON w.hotkey = n.hotkey GROUP BY n.uid ORDER BY n.uid")
        return [Neuron(uid, hotkey, float(stake), bool(permit), int(last)) for uid, hotkey, stake, permit, last in rows]

    def commitments(self) -> dict[int, str]:
        rows = self._read("SELECT n.uid, c.data FROM commitments c JOIN neurons n ON n.hotkey = c.hotkey")
        return {int(uid): str(data) for uid, data in rows}

    def weights_history(self, hotkey: str | None = None, since_block: int = 0) -> list[WeightsRecord]:
        rows = self._read(
            "SELECT hotkey, block, uids, values_u16, version_key FROM weights WHERE block >= ? "
            "AND (? IS NULL OR hotkey = ?) ORDER BY id", (since_block, hotkey, hotkey))
        return [WeightsRecord(h, b, tuple(json.loads(u)), tuple(json.loads(v)), k) for h, b, u, v, k in rows]

    # --- writes -----------------------------------------------------------------------------
    def produce_blocks(self, n: int = 1, at: float | None = None) -> int:
        """Append `n` blocks; returns the new head.

        Timestamps: the wall clock at production (never before the previous block), or, with
        `at`, `at + i * block_time_s` for the i-th new block (a simulation clock; must not go
        back in time).
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        with self._write() as db:
            head, last_ts, parent = db.execute(
                "SELECT number, timestamp, hash FROM blocks ORDER BY number DESC LIMIT 1").fetchone()
            if at is not None and at < last_ts:
                raise ValueError(f"at={at} is before the head block's timestamp {last_ts}")
            for i in range(1, n + 1):
                stamp = at + (i - 1) * self.block_time_s if at is not None else max(time.time(), last_ts)
                parent = _hash(parent, head + i)
                db.execute("INSERT INTO blocks VALUES (?, ?, ?)", (head + i, stamp, parent))
        return head + n

    def run_realtime(self, *, until_block: int | None = None, stop: threading.Event | None = None) -> int:
        """Produce a block every `block_time_s` of wall clock until `until_block` or `stop`."""
        if until_block is None and stop is None:
            raise ValueError("give until_block or stop, or this never returns")
        stop = stop or threading.Event()
        head = self.block()
        while (until_block is None or head < until_block) and not stop.is_set():
            due = self.block_timestamp(head) + self.block_time_s
            while time.time() < due and not stop.is_set():
                stop.wait(min(due - time.time(), 0.5))
            if not stop.is_set():
                head = self.produce_blocks(1)
        return head

    def register(self, hotkey: str, stake: float = 0.0, validator_permit: bool = False) -> int:
        """The hotkey's uid; registering an already registered hotkey returns its uid unchanged."""
        if not hotkey:
            raise ValueError("hotkey must be non-empty")
        with self._write() as db:
            row = db.execute("SELECT uid FROM neurons WHERE hotkey = ?", (hotkey,)).fetchone()
            if row:
                return int(row[0])
            uid = db.execute("SELECT COALESCE(MAX(uid) + 1, 0) FROM neurons").fetchone()[0]
            head = db.execute("SELECT MAX(number) FROM blocks").fetchone()[0]
            db.execute("INSERT INTO neurons VALUES (?, ?, ?, ?, ?)", (uid, hotkey, float(stake), int(validator_permit), head))
        return int(uid)

    def _uid(self, db: sqlite3.Connection, hotkey: str) -> int:
        row = db.execute("SELECT uid FROM neurons WHERE hotkey = ?", (hotkey,)).fetchone()
        if row is None:
            raise ChainError(f"hotkey {hotkey} is not registered on netuid {self.netuid}", "not_registered")
        return int(row[0])

    def commit(self, hotkey: str, data: str) -> None:
        check_commitment(data)
        with self._write() as db:
            self._uid(db, hotkey)
            head = db.execute("SELECT MAX(number) FROM blocks").fetchone()[0]
            db.execute("INSERT OR REPLACE INTO commitments VALUES (?, ?, ?)", (hotkey, data, head))

    def set_weights(self, hotkey: str, uids: Sequence[int], weights: Sequence[float],
                    version_key: int) -> WeightsResult:
        """Stored in the chain's u16 form; refused when unregistered, rate limited or naming unknown uids."""
        dests, values = to_u16(uids, weights)
        with self._write() as db:
            self._uid(db, hotkey)
            head = db.execute("SELECT MAX(number) FROM blocks").fetchone()[0]
            last = db.execute("SELECT MAX(block) FROM weights WHERE hotkey = ?", (hotkey,)).fetchone()[0]
            if last is not None and head - last < self.weights_rate_limit:
                wait = self.weights_rate_limit - (head - last)
                raise ChainError(f"weights were last set {head - last} blocks ago; the rate limit is "
                                 f"{self.weights_rate_limit} blocks; retry in {wait} blocks", "rate_limited")
            known = {r[0] for r in db.execute("SELECT uid FROM neurons")}
            if unknown := sorted(set(dests) - known):
                raise ChainError(f"uids {unknown} are not registered on netuid {self.netuid}", "rejected")
            db.execute("INSERT INTO weights (hotkey, block, uids, values_u16, version_key) VALUES (?, ?, ?, ?, ?)",
                       (hotkey, head, json.dumps(dests), json.dumps(values), int(version_key)))
        return WeightsResult(True, f"weights set at block {head}", head, tuple(int(u) for u in uids),
                             tuple(float(w) for w in weights), int(version_key))
