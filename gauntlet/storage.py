"""Peers' buckets: one small interface over a local folder or an S3-compatible store (S3, R2).

Why a wrapper over fsspec: the validator needs three guarantees that raw fsspec does not give.
Times come from the store's own clock (S3 `LastModified`, a file's mtime), because the put window
is judged by the store, never by a peer's claim. A download is refused by size before it is read
and bounded by a timeout, so a hostile peer cannot exhaust memory or stall a window. Failures are
typed so that blame is right: `ObjectMissing` and `AccessDenied` are the peer's doing (its file or
its committed credentials), `StorageUnavailable` is the network's or the validator's and must
never be held against a peer. Peers' objects on S3 are read by `gauntlet.peer_read` instead,
which trusts nothing the endpoint says; `Bucket` is for stores whose server we trust.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Iterator, Literal

from fsspec.asyn import sync
from fsspec.exceptions import FSTimeoutError
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

COMMITMENT_VERSION = "g1"
"""First field of a bucket commitment; bump it when the layout below changes."""
_TMP_PREFIX = ".gauntlet-tmp-"
_REDACTED = "<keys redacted>"
_KEY_RE = re.compile(r"^[A-Za-z0-9._\-]+(/[A-Za-z0-9._\-]+)*$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_LOCAL_IO = ThreadPoolExecutor(max_workers=8, thread_name_prefix="gauntlet-local-io")


def gradient_key(window: int, uid: int) -> str:
    """Where a peer puts its pseudo-gradient for a window (zero-padded so keys sort by window)."""
    if window < 0 or uid < 0:
        raise ValueError(f"window and uid must be >= 0; got window={window}, uid={uid}")
    return f"gauntlet/v1/gradients/{window:08d}/{uid}.safetensors"


class StorageError(Exception):
    """Base of every storage failure; the message names the bucket and the key."""


class ObjectMissing(StorageError):
    """No object at that key (or no such bucket): the peer did not upload."""


class AccessDenied(StorageError):
    """The store refused the credentials: the peer committed keys that cannot read its bucket."""


class ObjectTooLarge(StorageError):
    def __init__(self, message: str, size: int, cap: int) -> None:
        super().__init__(message)
        self.size = size
        self.cap = cap


class StorageUnavailable(StorageError):
    """Network, server or timeout fault: the validator's or the infrastructure's, never the peer's."""


class CommitmentError(ValueError):
    """A commitment text that is not a valid bucket spec (a peer's fault, reported as such)."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime
    """Timezone-aware UTC, from the store's clock (S3 has 1 s resolution)."""


class BucketSpec(BaseModel):
    """What a peer commits on chain so that anyone can read its bucket (read credentials only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["local", "s3"]
    path: str | None = None
    endpoint_url: str | None = None
    bucket: str | None = None
    region: str = "us-east-1"
    """R2 accepts `us-east-1` as an alias of `auto`; AWS needs the bucket's own region."""
    access_key_id: str | None = None
    secret_access_key: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> BucketSpec:
        s3_fields = (self.endpoint_url, self.bucket, self.access_key_id, self.secret_access_key)
        if self.kind == "local":
            if not self.path or any(s3_fields):
                raise ValueError("a local bucket spec needs `path` and no S3 fields")
        else:
            if self.path is not None or not all(s3_fields):
                raise ValueError(
                    "an s3 bucket spec needs endpoint_url, bucket, access_key_id and "
                    "secret_access_key, and no `path`"
                )
            if not re.match(r"^https?://[^\s|/]+(/[^\s|]*)?$", self.endpoint_url or ""):
                raise ValueError(f"endpoint_url {self.endpoint_url!r} is not an http(s) URL")
            if not _BUCKET_RE.match(self.bucket or ""):
                raise ValueError(f"bucket name {self.bucket!r} is not a valid S3 bucket name")
        for name in ("path", "region", "access_key_id", "secret_access_key"):
            value = getattr(self, name)
            if value is not None and ("|" in value or not value.isprintable() or not value):
                raise ValueError(f"{name} must be non-empty printable text without '|'")
        return self

    def to_commitment(self) -> str:
        """Compact text for the chain: `g1|local|<path>` or `g1|s3|<url>|<bucket>|<region>|<id>|<secret>`."""
        if self.kind == "local":
            return "|".join((COMMITMENT_VERSION, "local", self.path or ""))
        parts = (self.endpoint_url, self.bucket, self.region, self.access_key_id, self.secret_access_key)
        return "|".join((COMMITMENT_VERSION, "s3", *(p or "" for p in parts)))

    def redacted(self) -> str:
        """The commitment without its read keys (endpoint, bucket, region kept): safe for logs and audit."""
        if self.kind == "local":
            return self.to_commitment()
        return "|".join((COMMITMENT_VERSION, "s3", self.endpoint_url or "", self.bucket or "", self.region, _REDACTED))

    @classmethod
    def from_commitment(cls, text: str) -> BucketSpec:
        if not isinstance(text, str):
            raise CommitmentError(f"a commitment is text; got {type(text).__name__}")
        parts = text.strip().split("|")  # messages never quote the text: it holds read keys
        if parts[0] != COMMITMENT_VERSION or len(parts) < 2:
            raise CommitmentError(f"commitment is not a Gauntlet bucket spec (expected '{COMMITMENT_VERSION}|...')")
        kind, fields = parts[1], parts[2:]
        names = {"local": ("path",), "s3": ("endpoint_url", "bucket", "region", "access_key_id", "secret_access_key")}
        if kind not in names or len(fields) != len(names[kind]):
            shown = kind if kind in names else "unknown"
            raise CommitmentError(f"commitment kind {shown!r} with {len(fields)} fields is not a known layout")
        try:
            return cls(kind=kind, **dict(zip(names[kind], fields)))
        except ValidationError as exc:
            raise CommitmentError(f"invalid bucket commitment: {exc.errors()[0]['msg']}") from exc


def redact_commitment(text: object) -> str:
    """Any commitment text, valid or not, with nothing that could be a key: a valid one keeps its
    endpoint, bucket and region; anything else is only a digest, since any part of it might be secret.
    Idempotent: a redacted text comes back as it is (replays redact the recorded plan again)."""
    if isinstance(text, str) and (text.endswith("|" + _REDACTED) or text.startswith("<unparsed commitment")):
        return text
    try:
        return BucketSpec.from_commitment(text).redacted()  # type: ignore[arg-type]
    except CommitmentError:
        digest = hashlib.sha256(str(text).encode("utf-8", "replace")).hexdigest()[:16]
        return f"<unparsed commitment sha256:{digest}>"


def check_key(key: str) -> str:
    """Keys are relative posix paths of safe characters; no `..`, so a key never leaves its bucket."""
    if not isinstance(key, str) or not _KEY_RE.match(key) or any(p in (".", "..") for p in key.split("/")):
        raise ValueError(f"invalid object key {key!r}: use relative a/b/c.ext of [A-Za-z0-9._-]")
    return key


class Bucket:
    """A local folder (LocalFileSystem) or an S3 bucket (s3fs) behind the same methods.

    Every call is bounded by `timeout_s` (on S3 the coroutine is cancelled; on a local disk the
    caller stops waiting), on top of s3fs's own connect/read timeouts and retries.
    """

    def __init__(self, fs: Any, root: str, name: str, *, is_s3: bool) -> None:
        self._fs, self._root, self.name, self._is_s3 = fs, root.rstrip("/"), name, is_s3
        self._faults: tuple[type[BaseException], ...] = (OSError, asyncio.TimeoutError)
        if is_s3:
            import aiohttp
            import botocore.exceptions

            self._faults += (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, aiohttp.ClientError)

    @classmethod
    def local(cls, path: str | os.PathLike[str]) -> Bucket:
        """A folder; created by the first `put`, so reading a peer's bucket never creates one."""
        root = str(Path(path).expanduser().resolve())
        return cls(LocalFileSystem(), root, root, is_s3=False)

    @classmethod
    def from_spec(cls, spec: BucketSpec, *, allow_local: bool = True, retries: int = 3,
                  connect_timeout_s: float = 5.0, read_timeout_s: float = 15.0) -> Bucket:
        """`allow_local=False` on a real network: a peer must not point the validator at its disk."""
        if spec.kind == "local":
            if not allow_local:
                raise CommitmentError("local bucket specs are only accepted on a local network")
            return cls.local(spec.path or "")
        import s3fs

        fs = s3fs.S3FileSystem(
            key=spec.access_key_id, secret=spec.secret_access_key, endpoint_url=spec.endpoint_url,
            client_kwargs={"region_name": spec.region}, skip_instance_cache=True, use_listings_cache=False,
            config_kwargs={"connect_timeout": connect_timeout_s, "read_timeout": read_timeout_s,
                           "retries": {"total_max_attempts": 1}},
        )
        fs.retries = max(1, retries)  # s3fs's own back-off loop; botocore's is off (above)
        return cls(fs, spec.bucket or "", f"{spec.endpoint_url}/{spec.bucket}", is_s3=True)

    def __repr__(self) -> str:
        return f"Bucket({self.name!r})"

    def _path(self, key: str) -> str:
        return f"{self._root}/{check_key(key)}"

    def _call(self, timeout_s: float, method: str, *args: Any, **kwargs: Any) -> Any:
        if timeout_s <= 0:
            raise FSTimeoutError
        if self._is_s3:
            return sync(self._fs.loop, getattr(self._fs, f"_{method}"), *args, timeout=timeout_s, **kwargs)
        return _LOCAL_IO.submit(getattr(self._fs, method), *args, **kwargs).result(timeout=timeout_s)

    @contextmanager
    def _translate(self, op: str, key: str) -> Iterator[None]:
        where = f"{op} {key!r} in bucket {self.name}"
        try:
            yield
        except FileNotFoundError as exc:
            raise ObjectMissing(f"{where}: no such object ({exc})") from exc
        except PermissionError as exc:
            raise AccessDenied(f"{where}: access denied ({exc})") from exc
        except (FSTimeoutError, FutureTimeout) as exc:
            raise StorageUnavailable(f"{where}: timed out") from exc
        except self._faults as exc:
            raise StorageUnavailable(f"{where}: {type(exc).__name__}: {exc}") from exc

    def _info(self, raw: dict[str, Any], key: str) -> ObjectInfo:
        if self._is_s3:
            stamp = raw["LastModified"].astimezone(UTC)
        else:
            stamp = datetime.fromtimestamp(raw["mtime"], tz=UTC)
        return ObjectInfo(key=key, size=int(raw["size"]), last_modified=stamp)

    def stat(self, key: str, timeout_s: float = 30.0) -> ObjectInfo | None:
        """None when absent (a directory-like prefix counts as absent)."""
        path = self._path(key)
        try:
            with self._translate("stat", key):
                raw = self._call(timeout_s, "info", path)
        except ObjectMissing:
            return None
        return self._info(raw, key) if raw.get("type") == "file" else None

    def list(self, prefix: str = "", timeout_s: float = 30.0) -> list[ObjectInfo]:
        """Every object whose key starts with `prefix`, sorted by key."""
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        top = f"{self._root}/{check_key(base)}" if base else self._root
        try:
            with self._translate("list", prefix):
                found = self._call(timeout_s, "find", top, detail=True)
        except ObjectMissing:
            return []
        out = []
        for path, raw in found.items():
            key = path[len(self._root) + 1:]
            if raw.get("type") == "file" and key.startswith(prefix) and _TMP_PREFIX not in key:
                out.append(self._info(raw, key))
        return sorted(out, key=lambda o: o.key)

    def get(self, key: str, max_bytes: int, timeout_s: float) -> bytes:
        """The object's bytes; refused by size before any byte is read; `timeout_s` bounds it all."""
        return self.read(key, max_bytes, timeout_s)[1]

    def read(self, key: str, max_bytes: int, timeout_s: float) -> tuple[ObjectInfo, bytes]:
        """Like `get`, with the object's info (the store's LastModified) from the same stat."""
        if max_bytes < 0 or timeout_s <= 0:
            raise ValueError(f"max_bytes must be >= 0 and timeout_s > 0; got {max_bytes}, {timeout_s}")
        deadline = time.monotonic() + timeout_s
        info = self.stat(key, timeout_s)
        where = f"get {key!r} in bucket {self.name}"
        if info is None:
            raise ObjectMissing(f"{where}: no such object")
        if info.size > max_bytes:
            raise ObjectTooLarge(f"{where}: {info.size} bytes > cap {max_bytes}", info.size, max_bytes)
        # at most the stated size + 1 bytes (never a buffer of the whole cap): a swap after stat
        # cannot blow the cap, and an object that grew between stat and read is caught
        end = min(max_bytes, info.size) + 1
        with self._translate("get", key):
            data = self._call(deadline - time.monotonic(), "cat_file", self._path(key), start=0, end=end)
        if len(data) > max_bytes:
            raise ObjectTooLarge(f"{where}: grew past cap {max_bytes} while read", len(data), max_bytes)
        if len(data) > info.size:
            raise StorageError(f"{where}: the object changed while it was read")
        return info, data

    def put(self, key: str, data: bytes, timeout_s: float = 300.0) -> None:
        """Atomic: readers see the old object or the new one, never a part (S3: one PUT, or a
        multipart upload that appears at once; local: temp file, fsync, rename)."""
        path = self._path(key)
        with self._translate("put", key):
            if self._is_s3:
                self._call(timeout_s, "pipe_file", path, bytes(data))
            else:
                _LOCAL_IO.submit(atomic_write, Path(path), bytes(data)).result(timeout=timeout_s)

    def delete(self, key: str, timeout_s: float = 30.0) -> None:
        """Idempotent: deleting an absent object is not an error."""
        try:
            with self._translate("delete", key):
                self._call(timeout_s, "rm_file", self._path(key))
        except ObjectMissing:
            return


def atomic_write(path: Path, data: bytes) -> None:
    """Write a local file so readers see the old one or the new one, never a part: a temp name
    that never ends in the final suffix (globs and listings skip it), fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
