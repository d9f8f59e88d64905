"""Buckets against real stores: a local folder, and moto's S3 server over HTTP on loopback."""

from __future__ import annotations

import math
import os
import time
from datetime import UTC
from pathlib import Path

import pytest

from gauntlet.storage import (
    AccessDenied,
    Bucket,
    BucketSpec,
    CommitmentError,
    ObjectMissing,
    ObjectTooLarge,
    StorageUnavailable,
    gradient_key,
    redact_commitment,
)
from tests.s3server import FaultyProxy, S3Endpoint, bucket_spec, create_bucket, credentials_checked, moto_server


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def bucket(request: pytest.FixtureRequest, tmp_path: Path) -> Bucket:
    if request.param == "local":
        return Bucket.local(tmp_path / "bucket")
    endpoint: S3Endpoint = request.getfixturevalue("s3_server")
    return Bucket.from_spec(bucket_spec(endpoint, create_bucket(endpoint)))


def test_gradient_key_layout() -> None:
    assert gradient_key(5, 3) == "gauntlet/v1/gradients/00000005/3.safetensors"
    keys = [gradient_key(w, 1) for w in (10, 9, 100)]
    assert sorted(keys) == [gradient_key(w, 1) for w in (9, 10, 100)]
    with pytest.raises(ValueError, match="window"):
        gradient_key(-1, 0)


def test_put_get_stat_list_round_trip(bucket: Bucket) -> None:
    before = time.time()
    bucket.put(gradient_key(2, 7), b"peer seven")
    bucket.put(gradient_key(2, 8), b"peer eight!")
    bucket.put(gradient_key(3, 7), b"next window")
    assert bucket.get(gradient_key(2, 7), max_bytes=100, timeout_s=5) == b"peer seven"
    info = bucket.stat(gradient_key(2, 8))
    assert info is not None and info.key == gradient_key(2, 8) and info.size == 11
    assert info.last_modified.tzinfo is not None and info.last_modified.utcoffset().total_seconds() == 0
    assert math.floor(before) <= info.last_modified.timestamp() <= time.time() + 1  # S3: 1 s resolution
    listed = bucket.list("gauntlet/v1/gradients/00000002/")
    assert [o.key for o in listed] == [gradient_key(2, 7), gradient_key(2, 8)]
    assert [o.size for o in listed] == [10, 11]
    assert [o.key for o in bucket.list("gauntlet/v1/gradients/00000002/7")] == [gradient_key(2, 7)]
    assert len(bucket.list()) == 3 and bucket.list("nothing/here/") == []


def test_put_replaces_and_delete_is_idempotent(bucket: Bucket) -> None:
    bucket.put("a/b.bin", b"old")
    bucket.put("a/b.bin", b"newer")
    assert bucket.get("a/b.bin", 10, 5) == b"newer"
    bucket.delete("a/b.bin")
    bucket.delete("a/b.bin")
    assert bucket.stat("a/b.bin") is None and bucket.list() == []


def test_late_upload_is_judged_by_the_store_clock(bucket: Bucket) -> None:
    deadline = time.time()
    time.sleep(math.ceil(deadline) - deadline + 0.01)  # S3 truncates LastModified to whole seconds
    bucket.put(gradient_key(4, 1), b"late")
    info = bucket.stat(gradient_key(4, 1))
    assert info is not None and info.last_modified.timestamp() > deadline
    assert info.last_modified.tzinfo == UTC


def test_missing_object(bucket: Bucket) -> None:
    assert bucket.stat("no/such.bin") is None
    with pytest.raises(ObjectMissing, match=r"no/such\.bin") as caught:
        bucket.get("no/such.bin", 10, 5)
    assert bucket.name in str(caught.value)


def test_size_cap_is_inclusive(bucket: Bucket) -> None:
    bucket.put("x.bin", b"12345")
    assert bucket.get("x.bin", max_bytes=5, timeout_s=5) == b"12345"
    with pytest.raises(ObjectTooLarge) as caught:
        bucket.get("x.bin", max_bytes=4, timeout_s=5)
    assert (caught.value.size, caught.value.cap) == (5, 4)


def test_keys_cannot_leave_the_bucket(bucket: Bucket) -> None:
    for key in ("../escape.bin", "/abs.bin", "a//b", "a/./b", "", "a b"):
        with pytest.raises(ValueError, match="invalid object key"):
            bucket.put(key, b"x")


def test_local_put_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    bucket = Bucket.local(tmp_path)
    bucket.put("w/1.safetensors", b"a" * 1000)
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["1.safetensors"]
    (tmp_path / "w" / ".gauntlet-tmp-crashed").write_bytes(b"half")  # a writer that died mid-put
    assert [o.key for o in bucket.list()] == ["w/1.safetensors"]


def test_local_oversized_object_refused_before_reading(tmp_path: Path) -> None:
    bucket = Bucket.local(tmp_path)
    with open(tmp_path / "huge.bin", "wb") as fh:  # sparse: 64 GiB that reading would exhaust memory on
        fh.truncate(64 * 2**30)
    with pytest.raises(ObjectTooLarge, match="huge.bin"):
        bucket.get("huge.bin", max_bytes=2**20, timeout_s=5)


@pytest.mark.integration
def test_s3_oversized_object_refused_before_reading(s3_server: S3Endpoint) -> None:
    name = create_bucket(s3_server)
    Bucket.from_spec(bucket_spec(s3_server, name)).put("big.bin", os.urandom(2 * 2**20))
    with FaultyProxy(s3_server.url, fail_after=64 * 1024, mode="cut") as proxy:
        bucket = Bucket.from_spec(bucket_spec(s3_server, name, url=proxy.url))
        with pytest.raises(ObjectTooLarge):
            bucket.get("big.bin", max_bytes=2**20, timeout_s=5)
        assert not proxy.failed.is_set()  # the body never crossed the wire


@pytest.mark.integration
def test_s3_server_dying_mid_fetch_is_unavailable_not_a_hang(s3_server: S3Endpoint) -> None:
    name = create_bucket(s3_server)
    Bucket.from_spec(bucket_spec(s3_server, name)).put("big.bin", os.urandom(8 * 2**20))
    with FaultyProxy(s3_server.url, fail_after=2**20, mode="cut") as proxy:
        bucket = Bucket.from_spec(bucket_spec(s3_server, name, url=proxy.url), retries=2)
        start = time.monotonic()
        with pytest.raises(StorageUnavailable, match="big.bin"):
            bucket.get("big.bin", max_bytes=2**30, timeout_s=8)
        assert proxy.failed.is_set() and time.monotonic() - start < 8


@pytest.mark.integration
def test_s3_hung_server_hits_the_timeout(s3_server: S3Endpoint) -> None:
    name = create_bucket(s3_server)
    Bucket.from_spec(bucket_spec(s3_server, name)).put("big.bin", os.urandom(4 * 2**20))
    with FaultyProxy(s3_server.url, fail_after=64 * 1024, mode="stall") as proxy:  # stalls early: robust under load
        bucket = Bucket.from_spec(bucket_spec(s3_server, name, url=proxy.url))
        with pytest.raises(StorageUnavailable, match="timed out"):
            bucket.get("big.bin", max_bytes=2**30, timeout_s=2.0)
        assert proxy.failed.is_set()


@pytest.mark.integration
def test_s3_every_call_is_bounded_by_its_timeout(s3_server: S3Endpoint) -> None:
    name = create_bucket(s3_server)
    with FaultyProxy(s3_server.url, fail_after=0, mode="stall") as proxy:  # answers nothing at all
        bucket = Bucket.from_spec(bucket_spec(s3_server, name, url=proxy.url))
        for call in (lambda: bucket.stat("a.bin", timeout_s=0.5), lambda: bucket.list(timeout_s=0.5),
                     lambda: bucket.put("a.bin", b"x", timeout_s=0.5)):
            with pytest.raises(StorageUnavailable, match="timed out"):
                call()


def test_reading_a_local_bucket_never_creates_it(tmp_path: Path) -> None:
    bucket = Bucket.local(tmp_path / "peer-9")
    assert bucket.stat("a.bin") is None and bucket.list() == []
    with pytest.raises(ObjectMissing):
        bucket.get("a.bin", 10, 5)
    assert not (tmp_path / "peer-9").exists()


@pytest.mark.integration
def test_s3_stopped_server_is_unavailable() -> None:
    with moto_server() as endpoint:
        bucket = Bucket.from_spec(bucket_spec(endpoint, create_bucket(endpoint)), retries=1)
        bucket.put("a.bin", b"x")
    for call in (lambda: bucket.stat("a.bin"), lambda: bucket.list(), lambda: bucket.get("a.bin", 10, 5)):
        with pytest.raises(StorageUnavailable, match=endpoint.url):
            call()


@pytest.mark.integration
def test_s3_wrong_credentials_are_access_denied(s3_server: S3Endpoint) -> None:
    name = create_bucket(s3_server)
    bucket = Bucket.from_spec(bucket_spec(s3_server, name))
    bucket.put("a.bin", b"x")
    with credentials_checked(s3_server), pytest.raises(AccessDenied, match="a.bin"):
        bucket.get("a.bin", 10, 5)


@pytest.mark.integration
def test_missing_s3_bucket_is_missing_object(s3_server: S3Endpoint) -> None:
    bucket = Bucket.from_spec(bucket_spec(s3_server, "never-created"))
    assert bucket.stat("a.bin") is None and bucket.list() == []
    with pytest.raises(ObjectMissing):
        bucket.get("a.bin", 10, 5)


# --- Bucket specs as committed on chain ---------------------------------------------------------

R2 = BucketSpec(
    kind="s3", endpoint_url="https://0123456789abcdef0123456789abcdef.r2.cloudflarestorage.com",
    bucket="peer-bucket", region="auto", access_key_id="a" * 32, secret_access_key="s" * 64,
)


@pytest.mark.parametrize("spec", [R2, BucketSpec(kind="local", path="data/localnet/buckets/peer-3")])
def test_bucket_spec_round_trips_through_a_commitment(spec: BucketSpec) -> None:
    text = spec.to_commitment()
    assert text.startswith("g1|") and BucketSpec.from_commitment(text) == spec


def test_r2_commitment_fits_three_raw_chain_fields() -> None:
    assert len(R2.to_commitment().encode()) <= 3 * 128


@pytest.mark.parametrize(
    "text",
    ["", "hello", "g2|s3|x", "g1|ftp|x", "g1|local", "g1|local|a|b", "g1|s3|http://h|bkt|r|id",
     "g1|s3|not-a-url|bkt|r|id|secret", "g1|s3|http://h|B!|r|id|secret", "g1|local|"],
)
def test_garbage_commitments_raise_a_clear_error(text: str) -> None:
    with pytest.raises(CommitmentError):
        BucketSpec.from_commitment(text)


def test_spec_fields_cannot_break_the_commitment_layout() -> None:
    with pytest.raises(ValueError, match="'\\|'"):
        BucketSpec(kind="s3", endpoint_url="http://h:1", bucket="bkt", access_key_id="a|b", secret_access_key="s")
    with pytest.raises(ValueError, match="local bucket spec"):
        BucketSpec(kind="local", path="p", bucket="bkt")


def test_local_specs_can_be_refused_on_a_real_network(tmp_path: Path) -> None:
    spec = BucketSpec(kind="local", path=str(tmp_path))
    assert Bucket.from_spec(spec).name == str(tmp_path.resolve())
    with pytest.raises(CommitmentError, match="local network"):
        Bucket.from_spec(spec, allow_local=False)


def test_redacted_commitments_keep_where_and_drop_the_keys() -> None:
    text = R2.redacted()
    assert R2.endpoint_url in text and R2.bucket in text and "|auto|" in text
    assert R2.access_key_id not in text and R2.secret_access_key not in text
    assert redact_commitment(R2.to_commitment()) == text
    local = BucketSpec(kind="local", path="data/localnet/buckets/peer-3")
    assert redact_commitment(local.to_commitment()) == local.to_commitment()  # a path is no secret


@pytest.mark.parametrize("text", ["g1|s3|https://h|B!|r|KEYID|SECRET", "g1|ftp|KEYID|SECRET", "SECRET", 42, None])
def test_unparsed_commitments_redact_to_a_digest(text: object) -> None:
    out = redact_commitment(text)
    assert out.startswith("<unparsed commitment sha256:") and "SECRET" not in out and "KEYID" not in out
    assert redact_commitment(text) == out != redact_commitment("other")


def test_commitment_errors_never_quote_the_text() -> None:
    for text in ("SECRET|s3", "g1|SECRET|x", "g1|s3|SECRET"):
        with pytest.raises(CommitmentError) as caught:
            BucketSpec.from_commitment(text)
        assert "SECRET" not in str(caught.value)
