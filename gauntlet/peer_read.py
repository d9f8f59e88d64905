"""One bounded read of a peer's file from the S3 endpoint its commitment names.

Everything here is hostile: the endpoint a peer commits, and every byte its server answers
(status, headers, sizes, times, redirects). So the read is a single signed, ranged GET over a
plain HTTP client we control instead of s3fs/botocore, which read whole bodies (error bodies
included) into memory and follow redirects. The guarantees:

- the endpoint passes the policy before any connection: on a real network only `https` to a host
  whose every resolved address is public, and the connection is pinned to those addresses (a DNS
  answer that changes between check and connect cannot reach a private address);
- at most `max_bytes + 1` body bytes are ever read, whatever the server announces;
- one deadline covers resolution, retries, connect, headers and body (a slow drip is cut);
- 429/5xx/SlowDown and dropped connections are retried a bounded number of times, then reported
  as `StorageUnavailable` (transient: the fetch stage decides who is to blame);
- whether `last_modified` comes from a store the peer does not control is recorded (`time_trusted`).

Trusted time: only the store's own clock decides timing and copy priority, so the allow-list
names S3-API hosts of providers (R2, AWS S3), label by label: `*.amazonaws.com` would also match
a peer's own EC2 machine. The stamp is whole seconds, and for a multipart upload it is the time
the upload was started, not finished.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from gauntlet.storage import (AccessDenied, BucketSpec, ObjectMissing, ObjectTooLarge, StorageError,
                              StorageUnavailable, check_key)

_DNS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="gauntlet-dns")
"""Not the loop's default executor: `asyncio.run` would wait for a hung lookup past the deadline."""
_CHUNK = 1 << 16
_ERROR_BODY_MAX = 16 * 1024
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
_TRANSIENT_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "TooManyRequests"})
_CODE_RE = re.compile(rb"<Code>([A-Za-z]{1,64})</Code>")
_RANGE_RE = re.compile(r"^bytes (\d{1,20})-(\d{1,20})/(\d{1,20}|\*)$")
REFUSED_DETAIL = "endpoint refused by the endpoint policy"
"""The only thing a refusal says: never whether something answered behind the address."""


class EndpointRefused(StorageError):
    """The committed endpoint fails the policy (scheme, host or a resolved address); the peer's fault."""


class BadAnswer(StorageError):
    """The endpoint answered, but not with a valid object read (bad headers, bad framing): malformed."""


@dataclass(frozen=True, slots=True)
class EndpointPolicy:
    allow_private: bool = False
    """Accept `http` and private/loopback targets: the local network and tests (moto on 127.0.0.1)."""
    trusted_time_hosts: tuple[str, ...] = ()
    """Host patterns (`*` = one DNS label) of stores whose LastModified the peer cannot set."""

    def trusted_provider(self, host: str) -> str | None:
        """The allow-list pattern `host` matches, or None (self-hosted: its clock is the peer's)."""
        labels = host.lower().rstrip(".").split(".")
        for pattern in self.trusted_time_hosts:
            want = pattern.lower().split(".")
            if len(want) == len(labels) and all(w in ("*", h) for w, h in zip(want, labels)):
                return pattern
        return None


def address_allowed(ip: str, policy: EndpointPolicy) -> bool:
    """Public unicast only, unless the policy allows private targets."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if policy.allow_private:
        return not (addr.is_multicast or addr.is_unspecified)
    bad = (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_multicast or addr.is_reserved
           or addr.is_unspecified or getattr(addr, "is_site_local", False))
    return addr.is_global and not bad


@dataclass(frozen=True, slots=True)
class PeerObject:
    data: bytes
    last_modified: datetime
    time_trusted: bool
    provider: str | None
    """The trusted-host pattern the endpoint matched (groups peers for outage blame), or None."""


@dataclass(frozen=True, slots=True)
class _Target:
    scheme: str
    host: str
    port: int
    base: str
    provider: str | None


def parse_endpoint(url: str, policy: EndpointPolicy) -> _Target:
    """Scheme, host and port of a committed endpoint, refused when the policy forbids the URL itself."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise EndpointRefused(REFUSED_DETAIL) from exc
    schemes = ("https", "http") if policy.allow_private else ("https",)
    if (parts.scheme not in schemes or not parts.hostname or parts.username is not None
            or parts.password is not None or parts.query or parts.fragment):
        raise EndpointRefused(REFUSED_DETAIL)
    host = parts.hostname.rstrip(".")
    provider = policy.trusted_provider(host)
    return _Target(parts.scheme, host, port, url.rstrip("/"), provider)


async def _resolve(target: _Target, policy: EndpointPolicy) -> list[ResolveResult]:
    """Every address of the host, all checked: one private address refuses the endpoint."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.run_in_executor(_DNS, socket.getaddrinfo, target.host, target.port, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise StorageUnavailable(f"endpoint host does not resolve ({type(exc).__name__})") from exc
    if not infos or not all(address_allowed(str(info[4][0]), policy) for info in infos):
        raise EndpointRefused(REFUSED_DETAIL)
    return [ResolveResult(hostname=target.host, host=str(info[4][0]), port=target.port, family=info[0],
                          proto=info[2], flags=socket.AI_NUMERICHOST) for info in infos]


class _Pinned(AbstractResolver):
    """Answers the connector with the addresses already checked, never a second lookup."""

    def __init__(self, results: list[ResolveResult]) -> None:
        self._results = results

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return self._results

    async def close(self) -> None:
        return None


_SSL: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    global _SSL
    if _SSL is None:
        _SSL = ssl.create_default_context()
    return _SSL


def _signed_headers(spec: BucketSpec, url: str, max_bytes: int) -> dict[str, str]:
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="GET", url=url, headers={"Range": f"bytes=0-{max_bytes}"})
    S3SigV4Auth(Credentials(spec.access_key_id, spec.secret_access_key), "s3", spec.region).add_auth(request)
    return {k: v for k, v in request.headers.items()}


def _status_error(status: int, body: bytes, where: str) -> StorageError:
    match = _CODE_RE.search(body)
    code = match.group(1).decode() if match else ""
    if status in _TRANSIENT_STATUS or code in _TRANSIENT_CODES:
        return StorageUnavailable(f"{where}: HTTP {status} {code}".rstrip())
    if status == 404:
        return ObjectMissing(f"{where}: no such object (HTTP 404 {code})".rstrip())
    if status == 403:
        return AccessDenied(f"{where}: access denied (HTTP 403 {code})".rstrip())
    if 300 <= status < 400:
        return StorageError(f"{where}: endpoint answered a redirect (HTTP {status}), not followed")
    if status == 416:
        return BadAnswer(f"{where}: empty object (HTTP 416)")
    return StorageError(f"{where}: endpoint answered HTTP {status} {code}".rstrip())


def _last_modified(headers: Any, where: str) -> datetime:
    raw = headers.get("Last-Modified")
    try:
        stamp = parsedate_to_datetime(raw) if raw else None
    except (TypeError, ValueError, IndexError, OverflowError):
        stamp = None
    if stamp is None or stamp.tzinfo is None:
        raise BadAnswer(f"{where}: no valid Last-Modified header, so no upload time")
    return stamp.astimezone(UTC)


def _announced_total(resp: aiohttp.ClientResponse, where: str) -> int | None:
    """The object's full size as announced (Content-Range total, else Content-Length of a 200)."""
    if resp.status == 206:
        match = _RANGE_RE.match(resp.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != 0:
            raise BadAnswer(f"{where}: a partial answer without a valid Content-Range from byte 0")
        return None if match.group(3) == "*" else int(match.group(3))
    return resp.content_length


async def _body(resp: aiohttp.ClientResponse, max_bytes: int, where: str) -> bytes:
    """The body with a running cap: reading stops at `max_bytes + 1`, whatever was announced."""
    total = _announced_total(resp, where)
    if total is not None and total > max_bytes:
        raise ObjectTooLarge(f"{where}: announced {total} bytes > cap {max_bytes}", total, max_bytes)
    chunks, size = [], 0
    while size <= max_bytes:
        chunk = await resp.content.read(min(_CHUNK, max_bytes + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > max_bytes:
        raise ObjectTooLarge(f"{where}: body ran past cap {max_bytes} (announced {total})", size, max_bytes)
    if total is not None and resp.status == 206 and size != total:
        raise BadAnswer(f"{where}: body of {size} bytes, but Content-Range announced {total}")
    return b"".join(chunks)


async def _attempt(spec: BucketSpec, target: _Target, pinned: list[ResolveResult], key: str,
                   max_bytes: int, where: str) -> tuple[datetime, bytes]:
    url = f"{target.base}/{spec.bucket}/{key}"
    connector = aiohttp.TCPConnector(resolver=_Pinned(pinned), ssl=_ssl_context(), force_close=True, limit=1)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        async with session.get(url, headers=_signed_headers(spec, url, max_bytes), allow_redirects=False) as resp:
            if resp.status not in (200, 206):
                raise _status_error(resp.status, await resp.content.read(_ERROR_BODY_MAX), where)
            stamp = _last_modified(resp.headers, where)
            return stamp, await _body(resp, max_bytes, where)


_DROPPED = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError, asyncio.TimeoutError)


async def _read(spec: BucketSpec, key: str, policy: EndpointPolicy, max_bytes: int, retries: int,
                deadline: float) -> PeerObject:
    where = f"get {key!r} from bucket {spec.bucket}"
    target = parse_endpoint(spec.endpoint_url or "", policy)
    pinned = await _resolve(target, policy)
    for attempt in range(retries + 1):
        try:
            stamp, data = await _attempt(spec, target, pinned, key, max_bytes, where)
            return PeerObject(data, stamp, target.provider is not None, target.provider)
        except StorageUnavailable as exc:
            fault: StorageError = exc
        except aiohttp.ClientResponseError as exc:  # the answer could not be parsed as HTTP
            said = "".join(c if c.isprintable() else " " for c in str(exc.message).split("\n", 1)[0])[:80]
            raise BadAnswer(f"{where}: not a valid HTTP answer ({said})") from exc
        except aiohttp.ClientSSLError as exc:  # a certificate that is not the host's: the endpoint's doing
            raise StorageError(f"{where}: TLS with the endpoint failed ({type(exc).__name__})") from exc
        except _DROPPED as exc:
            fault = StorageUnavailable(f"{where}: connection failed ({type(exc).__name__})")
        except aiohttp.ClientError as exc:
            raise StorageError(f"{where}: endpoint unusable ({type(exc).__name__})") from exc
        pause = 0.25 * 2**attempt
        if attempt == retries or time.monotonic() + pause >= deadline:
            raise fault
        await asyncio.sleep(pause)
    raise AssertionError("unreachable")


def read_peer_object(spec: BucketSpec, key: str, policy: EndpointPolicy, max_bytes: int, budget_s: float,
                     retries: int = 2) -> PeerObject:
    """The object at `key` in the peer's S3 bucket, within `budget_s` seconds in all.

    Raises `EndpointRefused`, `ObjectMissing`, `AccessDenied`, `ObjectTooLarge`, `BadAnswer`,
    `StorageError` (other refusals of the endpoint) or `StorageUnavailable` (transient, after retries).
    """
    if spec.kind != "s3":
        raise ValueError(f"read_peer_object reads s3 specs; got kind {spec.kind!r}")
    if max_bytes < 0 or budget_s <= 0 or retries < 0:
        raise ValueError(f"need max_bytes >= 0, budget_s > 0, retries >= 0; got {max_bytes}, {budget_s}, {retries}")
    check_key(key)
    deadline = time.monotonic() + budget_s

    async def bounded() -> PeerObject:
        try:
            async with asyncio.timeout(budget_s):
                return await _read(spec, key, policy, max_bytes, retries, deadline)
        except TimeoutError as exc:
            raise StorageUnavailable(f"get {key!r} from bucket {spec.bucket}: timed out after {budget_s:g} s") from exc

    return asyncio.run(bounded())
