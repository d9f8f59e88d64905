"""The Prefect server's global limits: one window validated at a time, and bucket reads at a rate.

`WINDOW_LOCK` (one slot) is held while a window is validated: by `follow-chain` around each
window, and by a `validate-window` run started on its own (the `rerun` deployment, the UI's Run
button, the CLI). Deployment limits only stop runs of the same deployment overlapping; this one
also keeps a rerun from restoring or writing a window's state while a follow run validates one.

The fetch stage (`gauntlet.window.fetch`) takes an optional `before_read` hook; the flows pass
`bucket_read_gate(cfg)`, which takes one slot of the decaying global concurrency limit
`BUCKET_READS` before each peer's read. Every flow run on the server shares the one limit, so a
catch-up of many windows, a rerun and the live window together stay under
`storage.reads_per_second`. A limit missing on the server is skipped with a warning (Prefect's
non-strict mode), so a flow on Prefect's ephemeral API (the local demo) still runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prefect.concurrency.sync import concurrency, rate_limit

from gauntlet.config import GauntletConfig

BUCKET_READS = "gauntlet-bucket-reads"
WINDOW_LOCK = "gauntlet-validate-window"
"""Global concurrency limit (one slot) held while a window is validated (`deployments.limits`
creates it; without it, as in tests on a bare API, the lock is skipped with a warning)."""
LOCK_LEASE_S = 600.0
"""Lease of the slot, renewed while the window runs; a crashed holder frees it after this."""


@contextmanager
def window_lock() -> Iterator[None]:
    """Hold the one validation slot: a second trigger waits here, then finds the window done."""
    with concurrency(WINDOW_LOCK, occupy=1, lease_duration=LOCK_LEASE_S, strict=False):
        yield


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
