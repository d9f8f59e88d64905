"""The fetch stage against peers' S3 buckets on moto's real server (and the outage rule)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from gauntlet.config import load_config
from gauntlet.storage import Bucket, BucketSpec, gradient_key
from gauntlet.verdicts import Reason
from gauntlet.peer_read import REFUSED_DETAIL
from gauntlet.window.fetch import FetchRecord, blame_outages, endpoint_policy, fetch_window
from gauntlet.window.plan import WindowPlan
from tests.s3server import bucket_spec, create_bucket

CFG = load_config(overrides=["filter.max_file_mb=0.001", "filter.fetch_timeout_s=5", "chain.network=finney",
                             "storage.endpoint_policy=allow_private"])  # moto is on loopback


def _plan(commitments: dict[int, str], peers: list[int]) -> WindowPlan:
    return WindowPlan(window=3, first_block=24, last_block=31, t_min=0.0, t_max=1.0, block_hash="00",
                      seed=1, lr=4e-4, peers={u: f"hk{u}" for u in peers}, commitments=commitments)


def test_fetch_reads_committed_s3_buckets_into_the_archive(s3_server, tmp_path):
    specs = {uid: bucket_spec(s3_server, create_bucket(s3_server)) for uid in (1, 2, 3)}
    Bucket.from_spec(specs[1]).put(gradient_key(3, 1), b"small file")
    Bucket.from_spec(specs[2]).put(gradient_key(3, 2), b"x" * 5000)  # over the 1 KB cap
    local = BucketSpec(kind="local", path=str(tmp_path / "mine"))  # refused on a real network
    commitments = {u: s.to_commitment() for u, s in specs.items()} | {5: local.to_commitment(), 6: "garbage"}
    records = {r.uid: r for r in fetch_window(_plan(commitments, [1, 2, 3, 4, 5, 6]), tmp_path / "archive", CFG)}

    ok = records[1]
    assert ok.error is None and ok.size == 10 and ok.content_hash == hashlib.sha256(b"small file").hexdigest()
    assert Path(ok.path).read_bytes() == b"small file"
    assert ok.last_modified == Bucket.from_spec(specs[1]).stat(gradient_key(3, 1)).last_modified.timestamp()
    assert not ok.time_trusted and ok.provider is None  # loopback time is trusted only on the local chain
    assert records[2].error == Reason.MALFORMED and "too large" in records[2].detail
    assert records[3].error == Reason.MISSING and "no file" in records[3].detail
    assert records[4].error == Reason.MISSING and "no bucket committed" in records[4].detail
    assert records[5].error == Reason.MISSING and "local" in records[5].detail
    assert records[6].error == Reason.MISSING and "unusable" in records[6].detail
    assert "garbage" not in records[6].detail  # a commitment is never quoted: it may hold keys
    archived = [p.relative_to(tmp_path / "archive").as_posix() for p in (tmp_path / "archive").rglob("*") if p.is_file()]
    assert archived == ["00000003/1.safetensors"]  # the one file fetched, no temporary left


def test_loopback_time_is_trusted_only_on_the_local_chain(s3_server, tmp_path):
    spec = bucket_spec(s3_server, create_bucket(s3_server))
    Bucket.from_spec(spec).put(gradient_key(3, 1), b"local file")
    local = load_config(overrides=["chain.network=local"])
    record = fetch_window(_plan({1: spec.to_commitment()}, [1]), tmp_path, local)[0]
    assert record.error is None and record.time_trusted and record.provider == "127.0.0.1"
    public = load_config(overrides=["chain.network=finney"])  # and a real network refuses loopback outright
    assert fetch_window(_plan({1: spec.to_commitment()}, [1]), tmp_path, public)[0].detail == REFUSED_DETAIL


def test_the_endpoint_policy_follows_the_chain_and_the_setting():
    assert endpoint_policy(load_config(overrides=["chain.network=local"])).allow_private
    real = endpoint_policy(load_config(overrides=["chain.network=finney"]))
    assert not real.allow_private and "127.0.0.1" not in real.trusted_time_hosts
    opened = endpoint_policy(load_config(overrides=["chain.network=finney", "storage.endpoint_policy=allow_private"]))
    assert opened.allow_private and "127.0.0.1" not in opened.trusted_time_hosts
    assert not endpoint_policy(load_config(overrides=["chain.network=local", "storage.endpoint_policy=public"])).allow_private


def _down(uid: int, provider: str | None) -> FetchRecord:
    return FetchRecord(uid, "k", error=Reason.INFRASTRUCTURE, detail="bucket unreachable", provider=provider)


def test_a_provider_outage_is_excused_only_when_other_peers_on_it_corroborate():
    r2, aws = "*.r2.cloudflarestorage.com", "s3.*.amazonaws.com"
    fine = [FetchRecord(u, "k", size=3, provider=aws) for u in range(10, 16)]
    outage = blame_outages([_down(1, r2), _down(2, r2), FetchRecord(3, "k", size=3, provider=r2), *fine])
    assert [r.error for r in outage[:3]] == [Reason.INFRASTRUCTURE, Reason.INFRASTRUCTURE, None]
    alone = blame_outages([_down(1, r2), FetchRecord(3, "k", size=3, provider=r2), *fine])
    assert alone[0].error == Reason.MISSING and "not corroborated" in alone[0].detail  # one peer is no quorum
    self_hosted = blame_outages([_down(1, None), _down(2, None), *fine])  # no provider: each endpoint is its own
    assert [r.error for r in self_hosted[:2]] == [Reason.MISSING, Reason.MISSING]
    minority = blame_outages([_down(1, r2), _down(2, r2), *(FetchRecord(u, "k", size=3, provider=r2) for u in (3, 4, 5)),
                              *fine])
    assert [r.error for r in minority[:2]] == [Reason.MISSING, Reason.MISSING]  # 2 of 5 on R2 is not an outage


def test_an_unreachable_bucket_is_the_peers_fault_unless_most_are_down():
    down = FetchRecord(1, "k", error=Reason.INFRASTRUCTURE, detail="bucket unreachable")
    fine = FetchRecord(2, "k", size=3)
    one_down = blame_outages([down, fine, FetchRecord(3, "k", size=3)])
    assert one_down[0].error == Reason.MISSING
    outage = blame_outages([down, FetchRecord(4, "k", error=Reason.INFRASTRUCTURE), fine])
    assert [r.error for r in outage] == [Reason.INFRASTRUCTURE, Reason.INFRASTRUCTURE, None]


def test_a_dead_endpoint_is_an_infrastructure_fault(tmp_path):
    dead = BucketSpec(kind="s3", endpoint_url="http://127.0.0.1:9", bucket="nobody", region="us-east-1",
                      access_key_id="a", secret_access_key="b")
    plan = _plan({1: dead.to_commitment(), 2: dead.to_commitment()}, [1, 2])
    records = fetch_window(plan, tmp_path / "archive", CFG)
    assert [r.error for r in records] == [Reason.INFRASTRUCTURE, Reason.INFRASTRUCTURE]
