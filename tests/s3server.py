"""A real S3 server for tests: moto's ThreadedMotoServer on 127.0.0.1, spoken to over HTTP.

Load it as a pytest plugin (`pytest_plugins = ["tests.s3server"]`) to get the session fixture
`s3_server`; `create_bucket` and `bucket_spec` make buckets on it. `FaultyProxy` sits between a
client and the server and cuts or stalls the connection after a number of response bytes: from
the client's side that is a server dying (or hanging) in the middle of a download.
"""

from __future__ import annotations

import logging
import socket
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import pytest

from gauntlet.storage import BucketSpec


@dataclass(frozen=True)
class S3Endpoint:
    url: str
    access_key_id: str = "testing"
    secret_access_key: str = "testing"
    region: str = "us-east-1"


@contextmanager
def moto_server() -> Iterator[S3Endpoint]:
    """A fresh moto S3 server on a free loopback port, stopped on exit."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Endpoint(url=f"http://{host}:{port}")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Endpoint]:
    with moto_server() as endpoint:
        yield endpoint


@contextmanager
def credentials_checked(endpoint: S3Endpoint) -> Iterator[None]:
    """Make moto check credentials (it accepts any by default); only IAM-issued keys pass.

    moto keeps this switch process-wide, so it also applies to other servers of this process
    until the block ends.
    """

    def reset_auth(count: str) -> None:
        request = urllib.request.Request(
            f"{endpoint.url}/moto-api/reset-auth", data=count.encode(), method="POST",
            headers={"Content-Type": "text/plain"},
        )
        urllib.request.urlopen(request, timeout=10).close()

    reset_auth("0")
    try:
        yield
    finally:
        reset_auth("inf")


def create_bucket(endpoint: S3Endpoint, name: str | None = None) -> str:
    """Create a bucket (a unique name when none is given) and return its name."""
    import boto3

    name = name or f"test-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3", endpoint_url=endpoint.url, region_name=endpoint.region,
        aws_access_key_id=endpoint.access_key_id, aws_secret_access_key=endpoint.secret_access_key,
    )
    client.create_bucket(Bucket=name)
    return name


def bucket_spec(endpoint: S3Endpoint, bucket: str, url: str | None = None) -> BucketSpec:
    """The spec a peer would commit for `bucket` (optionally reached through another URL)."""
    return BucketSpec(
        kind="s3", endpoint_url=url or endpoint.url, bucket=bucket, region=endpoint.region,
        access_key_id=endpoint.access_key_id, secret_access_key=endpoint.secret_access_key,
    )


class FaultyProxy:
    """TCP proxy to `upstream` that fails once `fail_after` response bytes have gone through.

    `cut`: closes every connection and stops listening (new connections are refused), as a
    server process that died. `stall`: stops forwarding but keeps connections open, as a hung
    server. Until then it is a transparent pipe.
    """

    def __init__(self, upstream_url: str, fail_after: int, mode: Literal["cut", "stall"] = "cut") -> None:
        host, port = upstream_url.removeprefix("http://").split(":")
        self._upstream = (host, int(port))
        self._fail_after, self._mode = fail_after, mode
        self._sent = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.failed = threading.Event()
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._upstream)
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        while not self._closed.is_set():
            try:
                chunk = src.recv(16384)
            except OSError:
                return
            if not chunk:
                return
            if counted:
                with self._lock:
                    self._sent += len(chunk)
                    over = self._sent > self._fail_after
                if over:
                    self._fail()
                    return
            if self.failed.is_set():
                return
            try:
                dst.sendall(chunk)
            except OSError:
                return

    def _fail(self) -> None:
        self.failed.set()
        if self._mode == "cut":
            self.close()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            for sock in [self._listener, *self._sockets]:  # shutdown also wakes a blocked accept()
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def __enter__(self) -> FaultyProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
