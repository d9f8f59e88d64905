"""Stage "fetch": download every peer's file for W into the validator's archive.

The archive (``<workdir>/archive/<window>/<uid>.safetensors``) is what later stages and replays
read: once fetched, a window no longer depends on the peers' buckets. Everything a peer commits
and everything its endpoint answers is hostile, so each peer gets exactly one record, never an
exception: a bounded read (`gauntlet.peer_read`: at most `filter.max_file_mb` read, one deadline
of `filter.fetch_timeout_s` for all of it, endpoints checked by `storage.endpoint_policy`). Who is
to blame for a transient fault is decided for the window as a whole (`blame_outages`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from gauntlet.config import GauntletConfig
from gauntlet.peer_read import REFUSED_DETAIL, BadAnswer, EndpointPolicy, EndpointRefused, parse_endpoint, read_peer_object
from gauntlet.storage import (AccessDenied, Bucket, BucketSpec, CommitmentError, ObjectMissing, ObjectTooLarge,
                              StorageError, StorageUnavailable, atomic_write, gradient_key)
from gauntlet.verdicts import Reason, Verdict
from gauntlet.window.plan import WindowPlan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FetchRecord:
    uid: int
    key: str
    size: int | None = None
    last_modified: float | None = None
    content_hash: str | None = None
    """sha256 of the bytes read: a re-read with another hash is the peer equivocating."""
    path: str | None = None
    error: str | None = None
    """A Reason value when the file could not be had; None when it was archived."""
    detail: str = ""
    time_trusted: bool = False
    """`last_modified` comes from a store on `storage.trusted_time_hosts`, not from the peer's server."""
    provider: str | None = None
    """The trusted-host pattern the endpoint matched (groups peers when blaming an outage), or None."""


def archive_path(archive: Path, window: int, uid: int) -> Path:
    return archive / f"{window:08d}" / f"{uid}.safetensors"


def endpoint_policy(cfg: GauntletConfig) -> EndpointPolicy:
    """`auto` allows private endpoints only on the local chain; loopback time is trusted only there."""
    mode, local = cfg.storage.endpoint_policy, cfg.chain.network == "local"
    private = mode == "allow_private" or (mode == "auto" and local)
    hosts = cfg.storage.trusted_time_hosts + (cfg.storage.local_trusted_time_hosts if private and local else ())
    return EndpointPolicy(allow_private=private, trusted_time_hosts=hosts)


def _read(spec: BucketSpec, key: str, cfg: GauntletConfig, policy: EndpointPolicy) -> tuple[datetime, bytes, bool]:
    cap = int(cfg.filter.max_file_mb * 2**20)
    if spec.kind == "local":  # a real peer must not point us at our own disk
        bucket = Bucket.from_spec(spec, allow_local=cfg.chain.network == "local")
        info, data = bucket.read(key, max_bytes=cap, timeout_s=cfg.filter.fetch_timeout_s)
        return info.last_modified, data, True
    got = read_peer_object(spec, key, policy, cap, cfg.filter.fetch_timeout_s, retries=cfg.storage.fetch_retries)
    return got.last_modified, got.data, got.time_trusted


def _reread(spec: BucketSpec, key: str, cfg: GauntletConfig, policy: EndpointPolicy, data: bytes) -> str | None:
    """Equivocation check (issue 9): a self-hosted endpoint, which answers as its peer likes, is read
    a second time (its own bounded read, so such a peer may cost twice `filter.fetch_timeout_s`);
    other bytes than the first read's mean it serves different files to different readers, so the
    miners may aggregate another file than ours. Returns the detail of an `equivocated` record, or
    None. Trusted providers are read once: they serve one object to every reader at a time, and a
    file replaced after the put window is what the published gather hashes settle, not a re-read."""
    _, again, _ = _read(spec, key, cfg, policy)
    if again == data:
        return None
    first, second = hashlib.sha256(data).hexdigest(), hashlib.sha256(again).hexdigest()
    return f"two reads of {key} gave different files (sha256 {first[:16]}..., then {second[:16]}...)"


def _failure(uid: int, key: str, exc: Exception) -> FetchRecord:
    """The record of a read that failed: reason by whose doing it was, detail without secrets."""
    mapping: list[tuple[type[Exception], Reason, str]] = [
        (EndpointRefused, Reason.MISSING, REFUSED_DETAIL),
        (CommitmentError, Reason.MISSING, "commitment unusable: {exc}"),
        (ObjectMissing, Reason.MISSING, f"no file at {key}"),
        (AccessDenied, Reason.MISSING, "the committed read keys cannot read the bucket: {exc}"),
        (ObjectTooLarge, Reason.MALFORMED, "file too large: {exc}"),
        (BadAnswer, Reason.MALFORMED, "bad answer from the bucket: {exc}"),
        (StorageUnavailable, Reason.INFRASTRUCTURE, "bucket unreachable: {exc}"),
        (StorageError, Reason.MISSING, "bucket unusable: {exc}"),
        (ValueError, Reason.MISSING, "bucket unusable: {exc}"),
    ]
    for kind, reason, detail in mapping:
        if isinstance(exc, kind):
            return FetchRecord(uid, key, error=reason, detail=detail.format(exc=str(exc)[:300]))
    # a bug of ours: the window goes on, and the peer is not blamed for it
    log.error("fetch of uid %s failed in the validator", uid, exc_info=exc)
    verdict = Verdict.internal_error(uid, "fetch", exc)
    return FetchRecord(uid, key, error=verdict.reason, detail=verdict.detail)


BeforeRead = Callable[[int], None]
"""Called with a peer's uid just before its file is read (the flows' global rate limit on bucket
reads); it may block. An exception from it is the validator's own fault and fails the stage."""


def fetch_one(plan: WindowPlan, uid: int, archive: Path, cfg: GauntletConfig,
              before_read: BeforeRead | None = None) -> FetchRecord:
    """One record for one peer, whatever its commitment and its endpoint do."""
    key = gradient_key(plan.window, uid)
    commitment = plan.commitments.get(uid)
    if commitment is None:
        return FetchRecord(uid, key, error=Reason.MISSING, detail="no bucket committed on chain")
    if before_read is not None:
        before_read(uid)
    policy, provider = endpoint_policy(cfg), None
    try:
        spec = BucketSpec.from_commitment(commitment)
        if spec.kind == "s3":
            provider = parse_endpoint(spec.endpoint_url or "", policy).provider
        stamp, data, trusted = _read(spec, key, cfg, policy)
        differs = _reread(spec, key, cfg, policy, data) if spec.kind == "s3" and provider is None else None
    except Exception as exc:  # noqa: BLE001 - hostile input must end as a record, never fail the window
        return replace(_failure(uid, key, exc), provider=provider)
    if differs is not None:
        return FetchRecord(uid, key, error=Reason.EQUIVOCATED, detail=differs, provider=provider)
    path = archive_path(archive, plan.window, uid)
    atomic_write(path, data)
    return FetchRecord(uid, key, size=len(data), last_modified=stamp.timestamp(),
                       content_hash=hashlib.sha256(data).hexdigest(), path=str(path),
                       time_trusted=trusted, provider=provider)


def blame_outages(records: list[FetchRecord]) -> list[FetchRecord]:
    """Decide who is to blame for transient faults (429/5xx/SlowDown, dropped or timed-out reads).

    A transient fault is excused (INFRASTRUCTURE, nobody penalised) only when other peers
    corroborate it in the same window: at least half of all peers failed transiently (the
    validator's own network, or everything is down), or at least two peers and at least half of
    those on the same trusted provider did (a provider outage: R2 or S3 down). Otherwise it is the
    peer's (MISSING). So an endpoint the peer alone runs, or a lone bucket that always errors, is
    never its own excuse: a self-hosted endpoint has no provider group, and one peer is no quorum.
    """
    down = [r for r in records if r.error == Reason.INFRASTRUCTURE]
    if not down or len(down) * 2 >= len(records):
        return records
    excused = set()
    for provider in {r.provider for r in down if r.provider is not None}:
        failed = sum(r.provider == provider for r in down)
        if failed >= 2 and failed * 2 >= sum(r.provider == provider for r in records):
            excused.add(provider)
    return [replace(r, error=Reason.MISSING, detail=f"{r.detail} (not corroborated by other peers: the peer's fault)")
            if r.error == Reason.INFRASTRUCTURE and r.provider not in excused else r for r in records]


def fetch_window(plan: WindowPlan, archive: Path, cfg: GauntletConfig,
                 before_read: BeforeRead | None = None) -> list[FetchRecord]:
    uids = sorted(plan.peers)
    with ThreadPoolExecutor(max_workers=cfg.storage.max_concurrency) as pool:
        records = list(pool.map(lambda u: fetch_one(plan, u, archive, cfg, before_read), uids))
    return blame_outages(records)


@dataclass(frozen=True)
class Fetched:
    """Result of stage "fetch": one record per expected peer, its file archived when it had one."""

    records: tuple[FetchRecord, ...]

    def by_uid(self) -> dict[int, FetchRecord]:
        return {r.uid: r for r in self.records}


def run(cfg: GauntletConfig, plan: WindowPlan, before_read: BeforeRead | None = None) -> Fetched:
    """Stage "fetch": every peer's file of the window into the validator's archive."""
    return Fetched(tuple(fetch_window(plan, Path(cfg.validator.workdir) / "archive", cfg, before_read)))
