"""Hostile peers that run their own S3 endpoint (`endpoint.py`), and its wiring into the network.

A permissionless validator accepts any S3 endpoint a peer commits, so a peer can answer the
validator's read with whatever it likes. These behaviours train (or copy) like the others, put
their file in their folder, and commit an `s3` bucket on the network's hostile endpoint, which
serves the folder in the behaviour's `Mode`:

| behaviour   | its endpoint                                                  | verdict, and why            |
|-------------|---------------------------------------------------------------|-----------------------------|
| forger      | serves a copy of an honest peer's update with a Last-Modified | untrusted_time: its time is |
|             | claiming it came before the victim's                          | its own word; never a copy  |
|             |                                                               | blamed on the victim        |
| equivocator | serves its honest file and a variant on alternate reads       | equivocated (two reads of   |
|             |                                                               | the fetch stage differ)     |
| oversized   | announces the real size, then sends hundreds of MB            | malformed (body past cap)   |
| slow_drip   | drips the body at ~1 kB/s                                     | missing (fetch deadline; an |
|             |                                                               | outage of one is its own)   |

The endpoint lives in the process running the miners (`serve_endpoints`, entered by
`simulate.run_network`): it binds a port when it starts, and if that is not the port in the
peers' commitments it commits the new URL, as a real peer whose address changed would.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from gauntlet.chain import LocalChain
from gauntlet.localnet.behaviours import BEHAVIOURS, Behaviour, Copycat
from gauntlet.localnet.endpoint import HOST, HostileEndpoint, Mode, Route
from gauntlet.storage import Bucket, BucketSpec

if TYPE_CHECKING:
    from gauntlet.localnet.network import Network, Peer

REGION, READ_KEY = "us-east-1", "localnet-read"
"""Read credentials of an endpoint bucket (the server accepts any signature)."""


class EndpointBehaviour(Behaviour):
    """Trains honestly; what is hostile is how its endpoint serves the file (`mode`)."""

    mode: ClassVar[Mode] = Mode.PLAIN


class Forger(Copycat, EndpointBehaviour):
    """Copies an honest peer's update under its own uid, after it, and claims it came first."""

    name = "forger"
    mode = Mode.FORGE


class Equivocator(EndpointBehaviour):
    name = "equivocator"
    mode = Mode.EQUIVOCATE


class Oversized(EndpointBehaviour):
    name = "oversized"
    mode = Mode.OVERSIZED


class SlowDrip(EndpointBehaviour):
    name = "slow_drip"
    mode = Mode.SLOW_DRIP


ENDPOINT_BEHAVIOURS: dict[str, type[EndpointBehaviour]] = {
    cls.name: cls for cls in (Forger, Equivocator, Oversized, SlowDrip)}
ENDPOINT_KINDS = tuple(ENDPOINT_BEHAVIOURS)
BEHAVIOURS.update(ENDPOINT_BEHAVIOURS)  # the registry `make_behaviour` and the network's checks use


def folder_of(network_folder: Path, hotkey: str) -> Path:
    """Where a peer's files live in the network (`init_network` creates it)."""
    return Path(network_folder) / "buckets" / hotkey


def endpoint_spec(hotkey: str, port: int) -> BucketSpec:
    return BucketSpec(kind="s3", endpoint_url=f"http://{HOST}:{port}", bucket=hotkey, region=REGION,
                      access_key_id=READ_KEY, secret_access_key=READ_KEY)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def commit_endpoints(chain: LocalChain, peers: Iterable[Peer], port: int | None = None) -> int | None:
    """Commit an endpoint bucket for every peer whose behaviour runs one; returns the port used
    (a free one now unless given), None when no peer runs an endpoint."""
    runners = [p for p in peers if p.behaviour in ENDPOINT_BEHAVIOURS]
    if not runners:
        return None
    port = _free_port() if port is None else port
    for peer in runners:
        chain.commit(peer.hotkey, endpoint_spec(peer.hotkey, port).to_commitment())
    return port


def upload_bucket(network: Network, uid: int) -> Bucket:
    """Where the simulation puts a peer's file: its folder for an endpoint peer (its endpoint
    serves from there; it takes no uploads), its committed bucket otherwise."""
    peer = next(p for p in network.peers if p.uid == uid)
    if peer.behaviour in ENDPOINT_BEHAVIOURS:
        return Bucket.local(folder_of(network.folder, peer.hotkey))
    return network.bucket(uid)


def _committed_port(network: Network, runners: list[Peer]) -> int:
    commitments = network.chain.commitments()
    try:
        url = BucketSpec.from_commitment(commitments[runners[0].uid]).endpoint_url or ""
        return int(url.rsplit(":", 1)[1])
    except (KeyError, ValueError, IndexError):
        return 0


@contextmanager
def serve_endpoints(network: Network) -> Iterator[HostileEndpoint | None]:
    """The network's hostile endpoint, serving every endpoint peer's folder while the block runs
    (None and nothing started when no peer runs one)."""
    runners = [p for p in network.peers if p.behaviour in ENDPOINT_BEHAVIOURS]
    if not runners:
        yield None
        return
    try:
        server = HostileEndpoint(_committed_port(network, runners))
    except OSError:  # the committed port is taken now: serve elsewhere and say so on chain
        server = HostileEndpoint(0)
    try:
        for peer in runners:
            mode = ENDPOINT_BEHAVIOURS[peer.behaviour].mode
            server.add(peer.hotkey, Route(folder_of(network.folder, peer.hotkey), mode))
        current = network.chain.commitments()
        moved = [p for p in runners if current.get(p.uid) != endpoint_spec(p.hotkey, server.port).to_commitment()]
        commit_endpoints(network.chain, moved, server.port)
        yield server
    finally:
        server.close()
