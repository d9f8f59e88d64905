"""An S3 endpoint that misbehaves on purpose, for tests: a small HTTP server on 127.0.0.1.

It speaks just enough S3 for the fetch stage (a GET of one object; any path is that object) and
answers each request with an `Answer`: any status, missing or lying headers (Content-Length,
Last-Modified, Content-Range), bodies longer than announced, a slow drip, a redirect, raw bytes
that are not HTTP, or a connection reset. `answers` may be a function of the request number, so a
server can change its content between reads or fail only the first time.
"""

from __future__ import annotations

import itertools
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.utils import formatdate

from gauntlet.storage import BucketSpec


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes | Callable[[], Iterable[bytes]] = b"gradient bytes"
    """Bytes, or a function giving chunks (a huge body without holding it in memory)."""
    headers: dict[str, str | None] = field(default_factory=dict)
    """Overrides of the defaults (Content-Length of a bytes body, Last-Modified now); None drops one."""
    drip_s: float = 0.0
    """Pause before each body byte (each byte of `raw`): a slow drip."""
    reset_after: int | None = None
    """Reset the connection (RST) after this many body bytes."""
    raw: bytes | None = None
    """Send these bytes verbatim instead of an HTTP answer."""


def _head(answer: Answer) -> bytes:
    headers: dict[str, str | None] = {"Last-Modified": formatdate(time.time(), usegmt=True),
                                      "Content-Type": "application/octet-stream", "Connection": "close"}
    if isinstance(answer.body, bytes):
        headers["Content-Length"] = str(len(answer.body))
    headers.update(answer.headers)
    lines = [f"HTTP/1.1 {answer.status} Hostile"] + [f"{k}: {v}" for k, v in headers.items() if v is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


class HostileS3:
    """Serves `answers` (one Answer, or a function of the request number) until closed."""

    def __init__(self, answers: Answer | Callable[[int], Answer]) -> None:
        self._answers = answers if callable(answers) else (lambda _n: answers)
        self._count = itertools.count()
        self.requests: list[str] = []
        self.body_bytes_sent = 0
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def spec(self, bucket: str = "hostile-bucket") -> BucketSpec:
        return BucketSpec(kind="s3", endpoint_url=self.url, bucket=bucket, region="us-east-1",
                          access_key_id="testing", secret_access_key="testing")

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                request = self._read_request(conn)
                if request is None:
                    return
                self.requests.append(request)
                self._answer(conn, self._answers(next(self._count)))
            except OSError:
                return

    @staticmethod
    def _read_request(conn: socket.socket) -> str | None:
        conn.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                return None
            data += chunk
        return data.split(b"\r\n", 1)[0].decode("latin-1")

    def _answer(self, conn: socket.socket, answer: Answer) -> None:
        if answer.raw is not None:
            for i in range(len(answer.raw)) if answer.drip_s else [None]:
                time.sleep(answer.drip_s)
                conn.sendall(answer.raw if i is None else answer.raw[i:i + 1])
            return
        conn.sendall(_head(answer))
        chunks = [answer.body] if isinstance(answer.body, bytes) else answer.body()
        sent = 0
        for chunk in chunks:
            for piece in (chunk[i:i + 1] for i in range(len(chunk))) if answer.drip_s else [chunk]:
                if self._closed.is_set():
                    return
                if answer.reset_after is not None and sent + len(piece) > answer.reset_after:
                    conn.sendall(piece[:answer.reset_after - sent])
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return  # closing with linger 0 sends RST
                if answer.drip_s:
                    time.sleep(answer.drip_s)
                conn.sendall(piece)
                sent += len(piece)
                self.body_bytes_sent += len(piece)

    def close(self) -> None:
        self._closed.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()

    def __enter__(self) -> HostileS3:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def endless(chunk_mb: int = 1) -> Callable[[], Iterable[bytes]]:
    """A body that never ends (until the reader hangs up)."""
    block = b"\0" * (chunk_mb << 20)
    return lambda: itertools.repeat(block)
