"""A peer's own S3 endpoint for the local network, misbehaving on purpose (stdlib only).

On a real network a peer may commit any S3 endpoint, including a server it runs itself; every
header and byte that server answers is the peer's to choose. The local network's hostile peers
(`hostile_endpoints.py`) run one such server: a small HTTP server on loopback that speaks just
enough S3 for the validator's bounded read (`gauntlet.peer_read`): `GET /<bucket>/<key>`, any
signature accepted. Each bucket is one peer's folder in the network (`buckets/<hotkey>/`), served
in one `Mode`:

- `plain`: the file as it is, with its real modification time;
- `forge`: Last-Modified `forge_s` earlier than the real write (a thief claiming priority);
- `equivocate`: every other read of an object gets other bytes (one value's sign flipped), so
  readers see different files;
- `oversized`: a 206 whose Content-Range announces the file's real size, then a body that goes on
  far past it (no Content-Length: the body ends when the connection closes);
- `slow_drip`: the right headers, then the body a few bytes at a time (cut by the reader's deadline).

It binds 127.0.0.1; the local network trusts no loopback endpoint's clock
(`storage.local_trusted_time_hosts = []` in its config), so, as on a real network, what this
server says about time is the peer's word only.
"""

from __future__ import annotations

import json
import os
import re
import struct
import threading
from collections import Counter
from dataclasses import dataclass
from email.utils import formatdate
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOST = "127.0.0.1"
_PATH_RE = re.compile(r"^/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/([A-Za-z0-9._/-]{1,1024})$")
OVERSIZE_BYTES = 256 << 20
"""How far past the file an `oversized` body goes at most (far beyond any `filter.max_file_mb` used locally)."""
DRIP_BYTES, DRIP_PAUSE_S = 64, 0.05
"""A `slow_drip` body: this many bytes, then this pause (1.3 kB/s: a tiny model's file takes minutes)."""
_FLOATS = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}


class Mode(StrEnum):
    PLAIN = "plain"
    FORGE = "forge"
    EQUIVOCATE = "equivocate"
    OVERSIZED = "oversized"
    SLOW_DRIP = "slow_drip"


@dataclass(frozen=True)
class Route:
    folder: Path
    """The bucket's objects: `<folder>/<key>`."""
    mode: Mode = Mode.PLAIN
    forge_s: float = 1.0
    """`forge`: how much earlier than the real write the claimed Last-Modified is."""


def flip_one_value(data: bytes) -> bytes:
    """`data` with the sign of the first value of its first float tensor flipped (a safetensors
    file stays valid and finite, with other bytes: what an equivocator serves to some readers).
    Bytes that are not safetensors get their last byte changed."""
    try:
        n = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8:8 + n])
        start = min((meta["data_offsets"][0], _FLOATS[meta["dtype"]]) for name, meta in header.items()
                    if name != "__metadata__" and meta.get("dtype") in _FLOATS
                    and meta["data_offsets"][1] > meta["data_offsets"][0])
        at = 8 + n + start[0] + start[1] - 1  # little endian: the sign bit is the top bit of the last byte
    except (struct.error, ValueError, KeyError, TypeError, AttributeError):  # not a safetensors file
        at = len(data) - 1
    if at < 0 or at >= len(data):
        return data + b"\0"
    return data[:at] + bytes([data[at] ^ 0x80]) + data[at + 1:]


class HostileEndpoint:
    """The server: `add(bucket, route)`, `url`, `close()`. Serves until closed (daemon threads)."""

    def __init__(self, port: int = 0) -> None:
        self.routes: dict[str, Route] = {}
        self.reads: Counter[str] = Counter()
        """`bucket/key` -> GETs answered so far (the equivocator alternates on it)."""
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((HOST, port), _handler(self))
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"hostile-endpoint-{self.port}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def add(self, bucket: str, route: Route) -> None:
        if not _PATH_RE.match(f"/{bucket}/x"):
            raise ValueError(f"{bucket!r} is not a valid S3 bucket name")
        self.routes[bucket] = route

    def count(self, name: str) -> int:
        """The number of this read of `name` (0 for the first), counted atomically."""
        with self._lock:
            n = self.reads[name]
            self.reads[name] += 1
            return n

    def close(self) -> None:
        self.closed.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HostileEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _handler(endpoint: HostileEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        server_endpoint = endpoint

    return Handler


class _Handler(BaseHTTPRequestHandler):
    server_endpoint: HostileEndpoint
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet: the demo prints its own
        return None

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        match = _PATH_RE.match(self.path.split("?", 1)[0])
        route = self.server_endpoint.routes.get(match.group(1)) if match else None
        file = route.folder / match.group(2) if route and match else None
        if file is None or ".." in match.group(2).split("/") or not file.is_file():
            return self._error(404, "NoSuchKey")
        try:
            data, mtime = file.read_bytes(), os.stat(file).st_mtime
        except OSError:
            return self._error(404, "NoSuchKey")
        try:
            self._serve(route, f"{match.group(1)}/{match.group(2)}", data, mtime)
        except OSError:  # the reader hung up (its cap or its deadline): nothing more to do
            self.close_connection = True

    def _error(self, status: int, code: str) -> None:
        body = f"<Error><Code>{code}</Code></Error>".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _serve(self, route: Route, name: str, data: bytes, mtime: float) -> None:
        mode = route.mode
        if mode is Mode.EQUIVOCATE and self.server_endpoint.count(name) % 2:
            data = flip_one_value(data)
        stamp = mtime - route.forge_s if mode is Mode.FORGE else mtime
        oversized = mode is Mode.OVERSIZED
        self.send_response(206 if oversized else 200)
        self.send_header("Last-Modified", formatdate(stamp, usegmt=True))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Connection", "close")
        if oversized:  # the real size announced, then a body that does not stop there
            self.send_header("Content-Range", f"bytes 0-{len(data) - 1}/{len(data)}")
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.close_connection = True
        if mode is Mode.SLOW_DRIP:
            return self._drip(data)
        self.wfile.write(data)
        if oversized:
            self._pad(OVERSIZE_BYTES)

    def _drip(self, data: bytes) -> None:
        for i in range(0, len(data), DRIP_BYTES):
            if self.server_endpoint.closed.wait(DRIP_PAUSE_S):
                return
            self.wfile.write(data[i:i + DRIP_BYTES])
            self.wfile.flush()

    def _pad(self, size: int) -> None:
        block = b"\0" * (1 << 20)
        for _ in range(size >> 20):
            if self.server_endpoint.closed.is_set():
                return
            self.wfile.write(block)
