"""The storage module against the real S3 server."""

import io
import os
import urllib.request
import uuid

import pytest

from core import storage


@pytest.fixture
def tenant_id():
    tid = uuid.uuid4()
    yield tid
    storage.delete_prefix(storage.tenant_prefix(tid))


def test_keys_are_built_under_the_tenant_prefix(tenant_id):
    assert storage.tenant_key(tenant_id, "datasets", "abc", "data.csv") == f"tenants/{tenant_id}/datasets/abc/data.csv"


@pytest.mark.parametrize(
    "part",
    ["..", ".", "a/b", "", "../x", "a\x00b", "/abs", "\uff41", "x" * 300, "-leading", "a b"],
)
def test_unsafe_parts_are_refused(tenant_id, part):
    with pytest.raises(storage.UnsafeKeyError):
        storage.tenant_key(tenant_id, "datasets", part)


@pytest.mark.parametrize("bad", ["", "..", "not-a-uuid", "../other"])
def test_tenant_prefix_needs_a_uuid(bad):
    with pytest.raises(storage.UnsafeKeyError):
        storage.tenant_prefix(bad)


def test_stream_upload_and_download_round_trip(tenant_id):
    payload = os.urandom(20 * 1024 * 1024 + 123)  # above the multipart threshold
    key = storage.tenant_key(tenant_id, "datasets", "d1", "blob.bin")
    storage.upload_stream(key, io.BytesIO(payload))
    assert storage.head(key)["ContentLength"] == len(payload)

    sink = io.BytesIO()
    storage.download_stream(key, sink)
    assert sink.getvalue() == payload
    assert b"".join(storage.iter_chunks(key, chunk_size=1 << 20)) == payload


def test_presigned_urls_work_over_plain_http(tenant_id):
    key = storage.tenant_key(tenant_id, "datasets", "d2", "small.txt")

    def url(method: str) -> str:
        return storage.client().generate_presigned_url(method, Params={"Bucket": storage.bucket(), "Key": key})

    request = urllib.request.Request(url("put_object"), data=b"hello", method="PUT")
    with urllib.request.urlopen(request) as response:
        assert response.status == 200
    with urllib.request.urlopen(url("get_object")) as response:
        assert response.read() == b"hello"


def test_delete_prefix_removes_only_that_folder(tenant_id):
    other = uuid.uuid4()
    for i in range(3):
        storage.put_bytes(storage.tenant_key(tenant_id, "jobs", "j1", f"f{i}"), b"x")
    storage.put_bytes(storage.tenant_key(other, "jobs", "j1", "keep"), b"x")
    try:
        assert storage.delete_prefix(storage.tenant_prefix(tenant_id) + "jobs/") == 3
        assert list(storage.list_keys(storage.tenant_prefix(tenant_id))) == []
        assert storage.head(storage.tenant_key(other, "jobs", "j1", "keep")) is not None
    finally:
        storage.delete_prefix(storage.tenant_prefix(other))


@pytest.mark.parametrize("prefix", ["", "tenants/", "system/", "tenants/x"])
def test_delete_prefix_refuses_wide_prefixes(prefix):
    with pytest.raises(storage.UnsafeKeyError):
        storage.delete_prefix(prefix)


def test_signatures_are_enforced():
    import boto3
    from botocore.exceptions import ClientError
    from django.conf import settings

    forged = boto3.client(
        "s3",
        endpoint_url=settings.S3_ENDPOINT_URL,
        aws_access_key_id=settings.S3_ACCESS_KEY_ID,
        aws_secret_access_key="wrong-secret",
        region_name="us-east-1",
    )
    with pytest.raises(ClientError):
        forged.list_objects_v2(Bucket=settings.S3_BUCKET)


def test_the_make_up_test_and_chaos_s3_stacks_use_disjoint_ports():
    from core.s3server import weed_ports
    from tests.support.chaos import CHAOS_S3_PORT

    stacks = [weed_ports(s3_port) for s3_port in (8333, 18333, CHAOS_S3_PORT)]
    listening = [{port for port in stack.values() if port} for stack in stacks]  # 0 turns a server off
    assert all(not listening[i] & listening[j] for i in range(3) for j in range(i + 1, 3))
    # Below the ephemeral range, where an outgoing connection could take a port before weed binds it.
    assert all(1024 < port < 32768 for ports in listening for port in ports)
    # Lance's server would take 9101 on every stack whatever its S3 port.
    assert all(stack["s3.port.lance"] == 0 for stack in stacks)
