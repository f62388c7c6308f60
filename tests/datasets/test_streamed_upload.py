"""``POST /api/v1/datasets`` streams the file to S3 while it arrives when the form says, before the file, that no
column is PII; otherwise it stages the file on disk as before (issue 15, pipelined single-request upload).

Real SeaweedFS and Postgres. A refused streamed upload leaves no object, no multipart upload and no row.
"""

from __future__ import annotations

import hashlib
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core import storage
from datasets import uploads
from datasets.models import Dataset
from tenants.models import Plan
from tests.support.datasets import big_csv, tenant_objects, validated

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024
BIG = 10 * MIB  # more than the head held in memory and more than one 8 MiB part


def post(client, content: bytes, *, before: dict, after: dict | None = None, filename: str = "big.csv", **extra):
    """The form with ``before`` fields, then the file, then ``after`` fields, in that order on the wire."""

    def encoded(fields: dict) -> dict:
        return {key: json.dumps(value) if isinstance(value, dict) else value for key, value in fields.items()}

    handle = io.BytesIO(content)
    handle.name = filename
    data = {**encoded(before), "file": handle, **encoded(after or {})}
    return client.post("/api/v1/datasets", data, format="multipart", **extra)


def no_pii(**fields) -> dict:
    """Fields that let the upload stream: ``column_tags`` empty, before the file."""
    return {"name": "streamed", "column_tags": {}, **fields}


def multipart_uploads(tenant) -> list:
    answer = storage.client().list_multipart_uploads(Bucket=storage.bucket(), Prefix=storage.tenant_prefix(tenant.id))
    return answer.get("Uploads", [])


def assert_nothing_left(tenant) -> None:
    assert tenant_objects(tenant) == []
    assert multipart_uploads(tenant) == []
    assert not Dataset.objects.filter(tenant=tenant).exists()


def refuse(*names):
    """Make the named paths fail loudly, to prove an upload did not take them."""

    def fail(*args, **kwargs):
        raise AssertionError(f"an upload took a path it must not: {names}")

    return fail


@pytest.fixture
def staging_refused(monkeypatch):
    """Staging on disk and the second upload of a staged file fail: only streaming can succeed."""
    monkeypatch.setattr(uploads, "StagedUpload", refuse("staged on disk"))
    monkeypatch.setattr("datasets.services.storage.upload_stream", refuse("uploaded a staged file"))


@pytest.fixture
def streaming_refused(monkeypatch):
    monkeypatch.setattr(uploads, "ObjectWriter", refuse("streamed to S3"))


@pytest.fixture
def multipart_starts(monkeypatch) -> list[str]:
    """The keys a multipart upload was started for."""
    seen: list[str] = []
    real = storage.create_multipart_upload

    def spy(key):
        seen.append(key)
        return real(key)

    monkeypatch.setattr(storage, "create_multipart_upload", spy)
    return seen


@pytest.fixture
def aborts(monkeypatch) -> list[str]:
    """The keys whose multipart upload was aborted."""
    seen: list[str] = []
    real = storage.abort_multipart_upload

    def spy(key, *, upload_id):
        seen.append(key)
        real(key, upload_id=upload_id)

    monkeypatch.setattr(storage, "abort_multipart_upload", spy)
    return seen


def test_a_streamed_upload_is_stored_once_as_a_multipart_object(api_a, tenant_a, staging_refused, settings):
    content = big_csv(BIG)
    before = set(settings.DATASET_STAGING_DIR.iterdir())
    response = post(api_a, content, before=no_pii(label_column="clicked"))
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["sha256"] == hashlib.sha256(content).hexdigest() and body["size_bytes"] == len(content)
    key = f"tenants/{tenant_a.tenant.id}/datasets/{body['id']}/data.csv"
    assert tenant_objects(tenant_a.tenant) == [key]
    meta = storage.head(key)
    assert meta["ContentLength"] == len(content)
    assert meta["ETag"].strip('"').endswith("-2")  # two parts: streamed as a multipart upload
    assert multipart_uploads(tenant_a.tenant) == []
    assert set(settings.DATASET_STAGING_DIR.iterdir()) == before  # no temporary file
    dataset = validated(body["id"])
    assert dataset.status == "ready", dataset.errors
    assert dataset.sha256 == body["sha256"]


def test_a_small_file_with_fields_first_is_held_in_memory(api_a, tenant_a, monkeypatch, streaming_refused):
    """A file no larger than the head is never streamed: it is checked whole in memory, then stored."""
    monkeypatch.setattr(uploads, "StagedUpload", refuse("staged on disk"))
    response = post(api_a, big_csv(100_000), before=no_pii(label_column="clicked"))
    assert response.status_code == 201, response.json()
    assert tenant_objects(tenant_a.tenant) == [Dataset.objects.get(pk=response.json()["id"]).object_key]


def test_a_streamed_parquet_file_is_checked_from_storage(api_a, tenant_a, staging_refused):
    """Parquet is checked from its footer: the head cannot decide, the stored object does."""
    values = [hashlib.sha256(str(i).encode()).hexdigest() * 2 for i in range(80_000)]
    sink = io.BytesIO()
    pq.write_table(pa.table({"token": values, "y": [i % 2 for i in range(80_000)]}), sink, compression="none")
    assert sink.tell() > BIG // 2
    response = post(api_a, sink.getvalue(), before=no_pii(label_column="y"), filename="t.bin")
    assert response.status_code == 201, response.json()
    assert response.json()["format"] == "parquet"
    assert validated(response.json()["id"]).status == "ready"


REFUSED_STREAMS = [
    # (case, content, fields before the file, fields after it, status, code, refused before any part is sent)
    ("binary head", b"\x00" * BIG, {}, {}, 400, "binary_file", True),
    ("unknown label, sent first", big_csv(BIG), {"label_column": "nope"}, {}, 400, "unknown_label_column", True),
    ("ragged first rows", b"a,b\n1,2,3\n" * (BIG // 10), {}, {}, 400, "ragged_rows", True),
    ("name with a path", big_csv(BIG), {"name": "../../x"}, {}, 400, "invalid_name", True),
    ("unknown label, sent after", big_csv(BIG), {}, {"label_column": "nope"}, 400, "unknown_label_column", False),
    ("unknown field after", big_csv(BIG), {}, {"colour": "blue"}, 400, "colour", False),
]


@pytest.mark.parametrize(
    "content, before, after, status, code, early",
    [r[1:] for r in REFUSED_STREAMS],
    ids=[r[0] for r in REFUSED_STREAMS],
)
def test_a_refused_streamed_upload_leaves_nothing(
    api_a, tenant_a, multipart_starts, content, before, after, status, code, early
):
    response = post(api_a, content, before=no_pii(**before), after=after)
    assert response.status_code == status, response.json()
    error = response.json()["error"]
    assert error["code"] == code or code in error["details"], error
    assert len(multipart_starts) == (0 if early else 1)  # refused from the head, or from the stored object
    assert_nothing_left(tenant_a.tenant)


def test_over_the_plan_limit_mid_stream_is_413_and_aborted(api_a, tenant_a, aborts):
    """The declared length passes the early check (the form's overhead allowance); the stream passes the limit
    after parts were sent, and the multipart upload is aborted."""
    Plan.objects.filter(pk=tenant_a.tenant.plan_id).update(max_dataset_bytes=20 * MIB)
    response = post(api_a, big_csv(20 * MIB + 10_000), before=no_pii())
    assert response.status_code == 413, response.json()
    assert response.json()["error"]["code"] == "dataset_too_large"
    assert len(aborts) == 1
    assert_nothing_left(tenant_a.tenant)


def test_over_the_storage_quota_mid_stream_is_403_and_aborted(api_a, tenant_a, aborts):
    Plan.objects.filter(pk=tenant_a.tenant.plan_id).update(storage_bytes=20 * MIB)
    response = post(api_a, big_csv(20 * MIB + 10_000), before=no_pii())
    assert response.status_code == 403, response.json()
    assert response.json()["error"]["code"] == "storage_quota_exceeded"
    assert len(aborts) == 1
    assert_nothing_left(tenant_a.tenant)


def test_a_declared_length_over_the_limit_is_refused_before_the_body(api_a, tenant_a, streaming_refused):
    Plan.objects.filter(pk=tenant_a.tenant.plan_id).update(max_dataset_bytes=5 * MIB)
    response = post(api_a, big_csv(BIG), before=no_pii())
    assert response.status_code == 413
    assert_nothing_left(tenant_a.tenant)


def test_quota_used_while_streaming_deletes_the_object(api_a, tenant_a, monkeypatch):
    """Another upload uses the quota while this one streams: the reservation at the end refuses this one."""
    tenant = tenant_a.tenant
    Plan.objects.filter(pk=tenant.plan_id).update(storage_bytes=20 * MIB)
    real = uploads.check_head

    def meanwhile_another_upload(*args, **kwargs):
        Dataset.objects.create(tenant=tenant, name="other", version=1, format="csv", size_bytes=18 * MIB)
        return real(*args, **kwargs)

    monkeypatch.setattr(uploads, "check_head", meanwhile_another_upload)
    response = post(api_a, big_csv(BIG), before=no_pii())
    assert response.status_code == 403, response.json()
    assert response.json()["error"]["code"] == "storage_quota_exceeded"
    assert tenant_objects(tenant) == [] and multipart_uploads(tenant) == []
    assert list(Dataset.objects.filter(tenant=tenant).values_list("name", flat=True)) == ["other"]


EMAILS = b"email,amount,label\n" + b"".join(b"person%d@example.com,%d,%d\n" % (i, i, i % 2) for i in range(300_000))


def test_pii_tags_before_the_file_stage_it_and_store_no_raw_value(api_a, tenant_a, streaming_refused):
    assert len(EMAILS) > uploads.HEAD_KEEP_BYTES
    response = post(api_a, EMAILS, before={"name": "people", "column_tags": {"email": "pii"}, "label_column": "label"})
    assert response.status_code == 201, response.json()
    [key] = tenant_objects(tenant_a.tenant)
    stored = b"".join(storage.iter_chunks(key))
    assert b"@example.com" not in stored and stored.count(b"pii_") == 300_000


@pytest.mark.parametrize(
    "before, after",
    [
        ({"name": "late"}, {"column_tags": {}, "label_column": "clicked"}),  # the fields after the file
        ({"name": "absent", "label_column": "clicked"}, {}),  # no column_tags at all: it might have come later
    ],
    ids=["fields after the file", "column_tags absent"],
)
def test_without_column_tags_before_the_file_it_is_staged(api_a, tenant_a, streaming_refused, before, after):
    content = big_csv(BIG)
    response = post(api_a, content, before=before, after=after)
    assert response.status_code == 201, response.json()
    assert response.json()["sha256"] == hashlib.sha256(content).hexdigest()
    assert validated(response.json()["id"]).status == "ready"


def test_pii_tags_after_a_streamed_file_are_refused_and_it_is_deleted(api_a, tenant_a):
    """``column_tags`` sent empty before the file binds; tags sent again after it are a contradiction (400)."""
    boundary = "b0undary"

    def field(name: str, value: str) -> bytes:
        return f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()

    body = (
        field("name", "people")
        + field("column_tags", "{}")
        + f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.csv"\r\n\r\n'.encode()
        + EMAILS
        + b"\r\n"
        + field("column_tags", json.dumps({"email": "pii"}))
        + f"--{boundary}--\r\n".encode()
    )
    response = api_a.post("/api/v1/datasets", body, content_type=f"multipart/form-data; boundary={boundary}")
    assert response.status_code == 400, response.json()
    assert response.json()["error"]["code"] == "conflicting_column_tags"
    assert_nothing_left(tenant_a.tenant)


def test_an_idempotent_replay_keeps_only_the_first_object(api_a, tenant_a):
    content = big_csv(BIG)
    first = post(api_a, content, before=no_pii(), HTTP_IDEMPOTENCY_KEY="stream-1")
    again = post(api_a, content, before=no_pii(), HTTP_IDEMPOTENCY_KEY="stream-1")
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert tenant_objects(tenant_a.tenant) == [Dataset.objects.get(pk=first.json()["id"]).object_key]
    assert multipart_uploads(tenant_a.tenant) == []
