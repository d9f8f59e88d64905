"""The fetch stage against peers' S3 buckets on moto's real server (and the outage rule)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from gauntlet.config import load_config
from gauntlet.storage import Bucket, BucketSpec, gradient_key
from gauntlet.verdicts import Reason
from gauntlet.window.fetch import FetchRecord, blame_outages, fetch_window
from gauntlet.window.plan import WindowPlan
from tests.s3server import bucket_spec, create_bucket

CFG = load_config(overrides=["filter.max_file_mb=0.001", "filter.fetch_timeout_s=5", "chain.network=finney"])


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
    assert records[2].error == Reason.MALFORMED and "too large" in records[2].detail
    assert records[3].error == Reason.MISSING and "no file" in records[3].detail
    assert records[4].error == Reason.MISSING and "no bucket committed" in records[4].detail
    assert records[5].error == Reason.MISSING and "local" in records[5].detail
    assert records[6].error == Reason.MISSING and "unusable" in records[6].detail
    archived = [p.relative_to(tmp_path / "archive").as_posix() for p in (tmp_path / "archive").rglob("*") if p.is_file()]
    assert archived == ["00000003/1.safetensors"]  # the one file fetched, no temporary left


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
