"""Peers that run their own hostile S3 endpoint, in real windows of the local network.

The endpoint (gauntlet/localnet/endpoint.py) on its own first, then a network of honest peers and
one of each endpoint behaviour, validated by the direct pipeline: no window fails, each hostile
peer gets its verdict in every window, the miners reach the same verdicts and the same model as
the validator, and no honest peer (the forger's victim included) is banned or called a copy.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from email.utils import parsedate_to_datetime
from pathlib import Path

import polars as pl
import pytest
import torch
from safetensors.torch import load, load_file, save

from gauntlet.audit.store import AuditStore
from gauntlet.localnet.endpoint import HostileEndpoint, Mode, Route, flip_one_value
from gauntlet.localnet.hostile_endpoints import ENDPOINT_KINDS, endpoint_spec, serve_endpoints
from gauntlet.localnet.network import init_network
from gauntlet.localnet.simulate import open_miners, run_network
from gauntlet.ratings import ValidatorState
from gauntlet.storage import BucketSpec
from gauntlet.window.context import checkpoint_path
from gauntlet.window.pipeline import Direct, validate_window

FAST = {"data": {"rows_per_page": 4}, "filter": {"put_window_s": 1.0, "fetch_timeout_s": 2.0}}
EXPECTED = {  # behaviour -> (reason, words in the detail)
    "forger": ("untrusted_time", "its own server"),
    "equivocator": ("equivocated", "different files"),
    "oversized": ("malformed", "past cap"),
    "slow_drip": ("missing", "timed out"),
}


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read(1 << 20)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_the_endpoint_serves_each_mode(tmp_path: Path) -> None:
    data = save({"a.vals": torch.tensor([1.5, -2.0]), "a.idx": torch.tensor([3, 4])})
    (tmp_path / "f").write_bytes(data)
    with HostileEndpoint() as server:
        for mode in Mode:
            server.add(f"b-{mode.value.replace('_', '-')}", Route(tmp_path, mode, forge_s=3600))
        status, plain_headers, plain = _get(f"{server.url}/b-plain/f")
        assert (status, plain) == (200, data) and int(plain_headers["Content-Length"]) == len(data)
        _, headers, body = _get(f"{server.url}/b-forge/f")
        claimed = parsedate_to_datetime(headers["Last-Modified"]).timestamp()
        assert body == data and claimed <= parsedate_to_datetime(plain_headers["Last-Modified"]).timestamp() - 3599
        reads = [_get(f"{server.url}/b-equivocate/f")[2] for _ in range(3)]
        assert reads[0] == reads[2] == data and reads[1] != data
        assert torch.equal(load(reads[1])["a.vals"], torch.tensor([-1.5, -2.0]))  # still a valid, finite file
        status, headers, body = _get(f"{server.url}/b-oversized/f")
        assert status == 206 and headers["Content-Range"] == f"bytes 0-{len(data) - 1}/{len(data)}"
        assert len(body) == 1 << 20 and body.startswith(data)  # and more was coming
        assert _get(f"{server.url}/b-plain/missing")[0] == 404 and _get(f"{server.url}/nobody/f")[0] == 404
        assert _get(f"{server.url}/b-plain/../f")[0] == 404
    assert flip_one_value(b"not safetensors") != b"not safetensors"


@pytest.mark.slow
def test_a_network_with_every_hostile_endpoint(tmp_path: Path, prepared_data) -> None:
    corpus, tokenizer = prepared_data
    roster = ["honest"] * 4 + list(ENDPOINT_KINDS)
    net = init_network(tmp_path / "net", behaviours=roster, corpus=corpus, tokenizer=tokenizer,
                       overrides={**FAST, "aggregation": {"effective_after": 0}})
    cfg = net.config
    assert cfg.storage.local_trusted_time_hosts == ()
    hostile = {p.uid: p.behaviour for p in net.peers if p.behaviour != "honest"}
    honest = net.uids("honest")
    for uid in hostile:
        assert BucketSpec.from_commitment(net.chain.commitments()[uid]).kind == "s3"
    state = [ValidatorState()]

    def validate(window: int) -> None:
        state[0] = validate_window(Direct(), cfg, window, state=state[0]).state

    reports = run_network(net, 4, validate)  # windows 0..2 are validated while the endpoint serves
    store = AuditStore(cfg.audit.root)
    assert store.windows() == [0, 1, 2]  # no window failed
    for report in reports[:3]:
        rows = store.read("verdicts", window_id=report.window)
        verdicts = {int(u): (r, d) for u, r, d in zip(rows["uid"], rows["reason"], rows["detail"])}
        assert {u: r for u, (r, _) in verdicts.items()} == report.verdicts  # the miners agree
        assert all(verdicts[u][0] == "ok" for u in honest), verdicts
        for uid, name in hostile.items():
            reason, words = EXPECTED[name]
            assert verdicts[uid][0] == reason and words in verdicts[uid][1], (name, verdicts[uid])
        assert report.aggregated and set(report.aggregated) <= set(honest)
    ratings = store.read("ratings").filter(pl.col("uid").is_in(honest))
    assert ratings.height == 3 * len(honest) and ratings["banned_until"].is_null().all()  # nobody honest banned
    miners = open_miners(net)
    for window in (1, 2, 3):  # one truth: the miners' model is the validator's
        ours, theirs = load_file(miners.theta_path(window)), load_file(checkpoint_path(cfg.validator.workdir, window))
        assert all(torch.equal(ours[n], theirs[n]) for n in ours), f"theta of window {window} differs"


def test_the_endpoint_moves_and_recommits_when_its_port_is_taken(tmp_path: Path, prepared_data) -> None:
    corpus, tokenizer = prepared_data
    net = init_network(tmp_path / "net", behaviours=["honest", "equivocator"], corpus=corpus, tokenizer=tokenizer)
    uid, hotkey = net.peers[1].uid, net.peers[1].hotkey
    port = int(BucketSpec.from_commitment(net.chain.commitments()[uid]).endpoint_url.rsplit(":", 1)[1])
    with HostileEndpoint(port):  # someone else holds the committed port now
        with serve_endpoints(net) as server:
            assert server is not None and server.port != port
            assert net.chain.commitments()[uid] == endpoint_spec(hotkey, server.port).to_commitment()
            manifest = json.loads((tmp_path / "net" / "manifest.json").read_text())
            assert manifest["peers"][1]["behaviour"] == "equivocator"
    with serve_endpoints(net) as again:
        assert again.port == server.port  # free again: the committed port is reused
