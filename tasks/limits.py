"""Bucket reads through one global rate limit on the Prefect server.

The fetch stage (`gauntlet.window.fetch`) takes an optional `before_read` hook; the flows pass
`bucket_read_gate(cfg)`, which takes one slot of the decaying global concurrency limit
`BUCKET_READS` before each peer's read. Every flow run on the server shares the one limit, so a
catch-up of many windows, a rerun and the live window together stay under
`storage.reads_per_second`. A limit missing on the server is skipped with a warning (Prefect's
non-strict mode), so a flow on Prefect's ephemeral API (the local demo) still runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prefect.concurrency.sync import rate_limit

from gauntlet.config import GauntletConfig

BUCKET_READS = "gauntlet-bucket-reads"


def read_limit(cfg: GauntletConfig) -> tuple[int, float] | None:
    """(slots, slot decay per second) of `BUCKET_READS`, or None when reads are unlimited.

    Slots are the burst allowed after a quiet spell: one second's worth of reads (at least one).
    """
    rate = cfg.storage.reads_per_second
    return None if rate == 0 else (max(1, math.ceil(rate)), rate)


@dataclass(frozen=True)
class BucketReadGate:
    """The fetch stage's `before_read`: blocks until the server grants one read (picklable, so it
    also travels to Dask workers)."""

    name: str = BUCKET_READS
    timeout_s: float | None = None

    def __call__(self, uid: int) -> None:
        rate_limit(self.name, occupy=1, timeout_seconds=self.timeout_s)


def bucket_read_gate(cfg: GauntletConfig) -> BucketReadGate | None:
    """The hook for this config: None (no server round trip per read) when reads are unlimited."""
    return None if read_limit(cfg) is None else BucketReadGate()
