"""The bounded read of a peer's object: endpoint policy, trusted hosts, SigV4 signing on moto."""

from __future__ import annotations

import boto3
import pytest

from gauntlet.peer_read import (REFUSED_DETAIL, EndpointPolicy, EndpointRefused, address_allowed, parse_endpoint,
                                read_peer_object)
from gauntlet.storage import AccessDenied, Bucket, BucketSpec, ObjectMissing, StorageError, StorageUnavailable
from tests.s3server import S3Endpoint, bucket_spec, create_bucket, credentials_checked

PUBLIC = EndpointPolicy(trusted_time_hosts=("*.r2.cloudflarestorage.com", "s3.*.amazonaws.com", "s3.amazonaws.com"))
PRIVATE = EndpointPolicy(allow_private=True)


@pytest.mark.parametrize("ip", ["1.1.1.1", "52.216.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass_the_public_policy(ip):
    assert address_allowed(ip, PUBLIC)


@pytest.mark.parametrize("ip", ["127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
                                "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "::1", "::", "fe80::1",
                                "fc00::1", "fec0::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
                                "64:ff9b::a9fe:a9fe", "2001:db8::1", "fe80::1%eth0"])
def test_private_and_special_addresses_are_refused(ip):
    assert not address_allowed(ip, PUBLIC)


def test_the_private_policy_still_refuses_what_is_no_host():
    assert address_allowed("127.0.0.1", PRIVATE) and address_allowed("10.0.0.1", PRIVATE)
    assert not address_allowed("0.0.0.0", PRIVATE) and not address_allowed("224.0.0.1", PRIVATE)


@pytest.mark.parametrize("url", ["http://example.com", "ftp://example.com", "https://u:p@example.com",
                                 "https://example.com?x=1", "https://example.com#f", "https://", "https://h:70000"])
def test_urls_the_public_policy_refuses_before_any_lookup(url):
    with pytest.raises(EndpointRefused) as caught:
        parse_endpoint(url, PUBLIC)
    assert str(caught.value) == REFUSED_DETAIL


@pytest.mark.parametrize(("host", "provider"), [
    ("0123abcd.r2.cloudflarestorage.com", "*.r2.cloudflarestorage.com"),
    ("S3.EU-West-1.amazonaws.com.", "s3.*.amazonaws.com"),
    ("s3.amazonaws.com", "s3.amazonaws.com"),
    ("ec2-1-2-3-4.compute-1.amazonaws.com", None),  # a peer's own machine under amazonaws.com
    ("a.b.r2.cloudflarestorage.com", None),  # `*` is one label
    ("r2.cloudflarestorage.com.evil.com", None),
    ("s3.x.y.amazonaws.com", None),
])
def test_trusted_time_hosts_match_label_by_label(host, provider):
    assert PUBLIC.trusted_provider(host) == provider
    if provider is not None:
        assert parse_endpoint(f"https://{host}", PUBLIC).provider == provider


@pytest.mark.integration
def test_requests_are_signed_so_a_checking_store_accepts_them(s3_server):
    """moto checks SigV4 signatures of IAM-issued keys: the right key reads, a wrong secret is denied."""
    iam = boto3.client("iam", endpoint_url=s3_server.url, region_name=s3_server.region,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    user = f"peer-{create_bucket(s3_server)}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=(
        '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}'))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    name = create_bucket(s3_server)
    Bucket.from_spec(bucket_spec(s3_server, name)).put("a/b.bin", b"signed bytes")
    good = bucket_spec(S3Endpoint(s3_server.url, key["AccessKeyId"], key["SecretAccessKey"]), name)
    wrong = bucket_spec(S3Endpoint(s3_server.url, key["AccessKeyId"], "x" * 40), name)
    with credentials_checked(s3_server):
        got = read_peer_object(good, "a/b.bin", PRIVATE, max_bytes=100, budget_s=5)
        with pytest.raises(AccessDenied, match="SignatureDoesNotMatch"):
            read_peer_object(wrong, "a/b.bin", PRIVATE, max_bytes=100, budget_s=5)
    assert got.data == b"signed bytes" and got.last_modified.tzinfo is not None and not got.time_trusted
    with pytest.raises(ObjectMissing):
        read_peer_object(good, "a/none.bin", PRIVATE, max_bytes=100, budget_s=5)


def test_bad_arguments_are_refused_by_name():
    spec = BucketSpec(kind="local", path="x")
    with pytest.raises(ValueError, match="kind 'local'"):
        read_peer_object(spec, "a.bin", PRIVATE, 10, 1)
    s3 = BucketSpec(kind="s3", endpoint_url="http://h:1", bucket="bkt", access_key_id="a", secret_access_key="b")
    with pytest.raises(ValueError, match="budget_s"):
        read_peer_object(s3, "a.bin", PRIVATE, 10, 0)
    with pytest.raises(ValueError, match="invalid object key"):
        read_peer_object(s3, "../a.bin", PRIVATE, 10, 1)


def _self_signed(folder) -> tuple[str, str]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_an_endpoint_whose_certificate_does_not_verify_is_unusable_not_transient(tmp_path):
    import socket
    import ssl
    import threading

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*_self_signed(tmp_path))
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(16)
            except (OSError, ssl.SSLError):
                pass

    threading.Thread(target=serve, daemon=True).start()
    spec = BucketSpec(kind="s3", endpoint_url=f"https://127.0.0.1:{server.getsockname()[1]}", bucket="bkt",
                      access_key_id="a", secret_access_key="b")
    try:
        with pytest.raises(StorageError, match="TLS") as caught:
            read_peer_object(spec, "a.bin", PRIVATE, max_bytes=100, budget_s=3)
    finally:
        server.close()
    assert not isinstance(caught.value, StorageUnavailable)  # retrying would not change a certificate
