"""Stage "fetch": list and download every peer's file for W into the validator's archive.

The archive (``<workdir>/archive/<window>/<uid>.safetensors``) is what later stages and replays
read: once fetched, a window no longer depends on the peers' buckets. Downloads run with bounded
concurrency, a size cap checked before reading and a timeout. A peer whose bucket cannot be read
is the peer's problem (``missing``), unless most buckets fail at once: then it is an outage of
the infrastructure and nobody is penalised (ours).
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from gauntlet.config import GauntletConfig
from gauntlet.storage import (Bucket, BucketSpec, ObjectMissing, ObjectTooLarge, StorageError, StorageUnavailable,
                              atomic_write, gradient_key)
from gauntlet.verdicts import Reason
from gauntlet.window.plan import WindowPlan


@dataclass(frozen=True)
class FetchRecord:
    uid: int
    key: str
    size: int | None = None
    last_modified: float | None = None
    content_hash: str | None = None
    path: str | None = None
    error: str | None = None
    """A Reason value when the file could not be had; None when it was archived."""
    detail: str = ""

    def row(self, window: int) -> dict[str, object]:
        out = {"window_id": window, **asdict(self)}
        out["archived_path"] = out.pop("path")
        return out


def archive_path(archive: Path, window: int, uid: int) -> Path:
    return archive / f"{window:08d}" / f"{uid}.safetensors"


def fetch_one(plan: WindowPlan, uid: int, archive: Path, cfg: GauntletConfig) -> FetchRecord:
    key = gradient_key(plan.window, uid)
    commitment = plan.commitments.get(uid)
    if commitment is None:
        return FetchRecord(uid, key, error=Reason.MISSING, detail="no bucket committed on chain")
    try:
        local_ok = cfg.chain.network == "local"  # a real peer must not point us at our own disk
        bucket = Bucket.from_spec(BucketSpec.from_commitment(commitment), allow_local=local_ok)
        info, data = bucket.read(key, max_bytes=int(cfg.filter.max_file_mb * 2**20),
                                 timeout_s=cfg.filter.fetch_timeout_s)
    except ObjectMissing:
        return FetchRecord(uid, key, error=Reason.MISSING, detail=f"no file at {key}")
    except ObjectTooLarge as exc:
        return FetchRecord(uid, key, error=Reason.MALFORMED, detail=f"file too large: {exc}")
    except StorageUnavailable as exc:
        return FetchRecord(uid, key, error=Reason.INFRASTRUCTURE, detail=f"bucket unreachable: {exc}")
    except (StorageError, ValueError) as exc:
        return FetchRecord(uid, key, error=Reason.MISSING, detail=f"bucket unusable: {exc}")
    path = archive_path(archive, plan.window, uid)
    atomic_write(path, data)
    return FetchRecord(uid, key, size=len(data), last_modified=info.last_modified.timestamp(),
                       content_hash=hashlib.sha256(data).hexdigest(), path=str(path))


def blame_outages(records: list[FetchRecord]) -> list[FetchRecord]:
    """Unreachable buckets are the peer's fault unless at least half of them fail together."""
    down = sum(r.error == Reason.INFRASTRUCTURE for r in records)
    if down and down * 2 < len(records):
        return [replace(r, error=Reason.MISSING) if r.error == Reason.INFRASTRUCTURE else r for r in records]
    return records


def fetch_window(plan: WindowPlan, archive: Path, cfg: GauntletConfig) -> list[FetchRecord]:
    uids = sorted(plan.peers)
    with ThreadPoolExecutor(max_workers=cfg.storage.max_concurrency) as pool:
        records = list(pool.map(lambda u: fetch_one(plan, u, archive, cfg), uids))
    return blame_outages(records)


@dataclass(frozen=True)
class Fetched:
    """Result of stage "fetch": one record per expected peer, its file archived when it had one."""

    records: tuple[FetchRecord, ...]

    def by_uid(self) -> dict[int, FetchRecord]:
        return {r.uid: r for r in self.records}


def run(cfg: GauntletConfig, plan: WindowPlan) -> Fetched:
    """Stage "fetch": every peer's file of the window into the validator's archive."""
    return Fetched(tuple(fetch_window(plan, Path(cfg.validator.workdir) / "archive", cfg)))
