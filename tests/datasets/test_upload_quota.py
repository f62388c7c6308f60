"""Uploads cannot spend past the storage quota: part URLs sign their length, completion checks the parts,
bytes in flight count, and concurrent uploads reserve their bytes atomically (issue 12, "Spending past the plan").

Everything goes through the HTTP API and real S3 (SeaweedFS) and a real database.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
import uuid
from urllib.parse import parse_qs, urlparse

import pytest
from django.db import connection

from core import storage
from datasets.models import Dataset, DatasetUpload
from tenants.models import Plan, Role
from tests.conftest import client_for
from tests.support.datasets import tenant_objects
from tests.support.factories import make_key

KIB, MIB = 1024, 1024 * 1024
PART = 8 * MIB
CSV_ROW = b"12 85 3 9,1\n"


def csv_of(size: int) -> bytes:
    """A CSV of exactly ``size`` bytes with two label classes."""
    header, tail = b"seq,label\n", b"1 2 3,0\n"
    body = header + CSV_ROW * ((size - len(header) - len(tail)) // len(CSV_ROW))
    return (body + tail).ljust(size, b"\n")


def put(url: str, data: bytes) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, method="PUT")
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.headers["ETag"]
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def start(api, size: int, name: str = "big clicks"):
    return api.post("/api/v1/datasets/uploads", {"name": name, "size": size, "filename": "big.csv"}, format="json")


def complete(api, upload_id, parts):
    return api.post(f"/api/v1/datasets/uploads/{upload_id}/complete", {"parts": parts}, format="json")


def storage_used(api) -> int:
    quotas = api.get("/api/v1/quotas").json()["quotas"]
    return next(q["used"] for q in quotas if q["name"] == "storage_bytes")


def tight_plan(tenant, *, storage_bytes: int) -> Plan:
    plan = Plan.objects.create(slug=f"tight-{uuid.uuid4().hex[:8]}", name="Tight", storage_bytes=storage_bytes)
    tenant.plan = plan
    tenant.save(update_fields=["plan"])
    return plan


def unsigned_length_url(upload: DatasetUpload, part_number: int) -> str:
    """A part URL without the signed length, as the old code made them (or an S3 that ignores the signature)."""
    return storage.client().generate_presigned_url(
        "upload_part",
        Params={
            "Bucket": storage.bucket(),
            "Key": upload.dataset.object_key,
            "UploadId": upload.s3_upload_id,
            "PartNumber": part_number,
        },
        ExpiresIn=300,
    )


# --- signed part lengths -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_part_url_takes_only_its_declared_bytes(api_a, tenant_a):
    """The attack: declare 1 KiB, PUT 24 MiB to the part URL. S3 refuses it; nothing is stored or counted."""
    response = start(api_a, KIB)
    assert response.status_code == 201, response.json()
    upload = response.json()
    [part] = upload["parts"]
    status, _ = put(part["url"], b"x" * (24 * MIB))
    assert status == 403  # SignatureDoesNotMatch: the length is part of the signature
    query = parse_qs(urlparse(part["url"]).query)
    assert "content-length" in query["X-Amz-SignedHeaders"][0].split(";")
    assert part["size"] == KIB
    row = DatasetUpload.objects.select_related("dataset").get(pk=upload["id"])
    assert list(storage.list_parts(row.dataset.object_key, upload_id=row.s3_upload_id)) == []
    assert storage_used(api_a) == KIB  # only the declared bytes, in flight

    refused = complete(api_a, upload["id"], [{"part_number": 1, "etag": '"00000000000000000000000000000000"'}])
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "size_mismatch"
    assert tenant_objects(tenant_a.tenant) == []
    assert not Dataset.objects.filter(tenant=tenant_a.tenant).exists()
    assert storage_used(api_a) == 0


@pytest.mark.django_db
def test_the_exact_parts_complete(api_a):
    content = csv_of(PART + 3 * KIB)
    upload = start(api_a, len(content)).json()
    assert [p["size"] for p in upload["parts"]] == [PART, 3 * KIB]
    etags = []
    for part in upload["parts"]:
        offset = (part["part_number"] - 1) * upload["part_size"]
        status, etag = put(part["url"], content[offset : offset + part["size"]])
        assert status == 200
        etags.append({"part_number": part["part_number"], "etag": etag})
    done = complete(api_a, upload["id"], etags)
    assert done.status_code == 200, done.json()
    assert done.json()["size_bytes"] == len(content)


@pytest.mark.django_db
def test_completion_refuses_parts_outside_the_declared_layout(api_a, tenant_a):
    """Defence in depth: were a 24 MiB part stored anyway (an S3 that ignores signed lengths, a URL signed before
    lengths were), completion compares every stored part with the declared layout and aborts the upload."""
    content = csv_of(PART + KIB)
    upload = start(api_a, len(content)).json()
    row = DatasetUpload.objects.select_related("dataset").get(pk=upload["id"])
    etags = []
    for part in upload["parts"]:
        offset = (part["part_number"] - 1) * upload["part_size"]
        status, etag = put(part["url"], content[offset : offset + part["size"]])
        etags.append({"part_number": part["part_number"], "etag": etag})
    status, _ = put(unsigned_length_url(row, 3), b"x" * (24 * MIB))  # a third part, outside the layout
    assert status == 200

    refused = complete(api_a, upload["id"], etags)  # names only the two declared parts
    assert refused.status_code == 400, refused.json()
    assert refused.json()["error"]["code"] == "size_mismatch"
    assert refused.json()["error"]["details"]["wrong_size_parts"] == [3]
    assert tenant_objects(tenant_a.tenant) == []
    assert not DatasetUpload.objects.filter(pk=upload["id"]).exists()
    with pytest.raises(storage.ClientError):  # the multipart upload and its parts are gone from S3
        list(storage.list_parts(row.dataset.object_key, upload_id=row.s3_upload_id))


@pytest.mark.django_db
def test_a_bigger_part_through_an_unsigned_url_is_refused_at_completion(api_a, tenant_a):
    upload = start(api_a, KIB).json()
    row = DatasetUpload.objects.select_related("dataset").get(pk=upload["id"])
    status, etag = put(unsigned_length_url(row, 1), csv_of(24 * MIB))
    assert status == 200
    refused = complete(api_a, upload["id"], [{"part_number": 1, "etag": etag}])
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "size_mismatch"
    assert refused.json()["error"]["details"]["wrong_size_parts"] == [1]
    assert tenant_objects(tenant_a.tenant) == []
    assert storage_used(api_a) == 0


@pytest.mark.django_db
def test_part_urls_are_short_lived_and_can_be_signed_again(api_a, settings):
    upload = start(api_a, PART + KIB).json()
    for part in upload["parts"]:
        assert parse_qs(urlparse(part["url"]).query)["X-Amz-Expires"] == [str(settings.DATASET_PART_URL_TTL_SECONDS)]
    assert settings.DATASET_PART_URL_TTL_SECONDS == 900
    assert "parts" not in api_a.get(f"/api/v1/datasets/uploads/{upload['id']}").json()  # reading signs nothing
    again = api_a.post(f"/api/v1/datasets/uploads/{upload['id']}/part-urls").json()
    assert [(p["part_number"], p["size"]) for p in again["parts"]] == [(1, PART), (2, KIB)]
    status, _ = put(again["parts"][1]["url"], b"y" * KIB)
    assert status == 200


@pytest.mark.django_db
def test_read_only_callers_get_no_part_urls(api_a, tenant_a):
    """A URL lets its holder write a part: a read-only key or a viewer must not be able to get one."""
    upload = start(api_a, PART + KIB).json()
    reader = client_for(make_key(tenant_a.tenant, scopes=("read",), role=Role.MEMBER).raw_key)
    viewer = client_for(make_key(tenant_a.tenant, scopes=("read", "write"), role=Role.VIEWER).raw_key)
    for caller in (reader, viewer):
        assert "parts" not in caller.get(f"/api/v1/datasets/uploads/{upload['id']}").json()
        assert caller.post(f"/api/v1/datasets/uploads/{upload['id']}/part-urls").status_code == 403


# --- bytes in flight ------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_bytes_in_flight_count_against_the_quota(api_a, tenant_a):
    tight_plan(tenant_a.tenant, storage_bytes=100 * KIB)
    pending = start(api_a, 60 * KIB)
    assert pending.status_code == 201
    assert storage_used(api_a) == 60 * KIB  # declared, nothing uploaded yet

    second = start(api_a, 50 * KIB, name="second")
    assert second.status_code == 403 and second.json()["error"]["code"] == "storage_quota_exceeded"
    proxied = api_a.post("/api/v1/datasets", {"name": "direct", "file": _file(csv_of(50 * KIB))}, format="multipart")
    assert proxied.status_code == 403 and proxied.json()["error"]["code"] == "storage_quota_exceeded"

    assert api_a.delete(f"/api/v1/datasets/uploads/{pending.json()['id']}").status_code == 204
    assert storage_used(api_a) == 0
    assert start(api_a, 50 * KIB, name="second").status_code == 201


def _file(content: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("data.csv", content, content_type="text/csv")


# --- concurrent uploads --------------------------------------------------------------------------------------------

CONCURRENT = 6


def _race(raw_key: str, send) -> list:
    """Send CONCURRENT requests at once, each from its own thread and database connection."""
    barrier = threading.Barrier(CONCURRENT)
    answers: list = [None] * CONCURRENT

    def run(i: int) -> None:
        try:
            api = client_for(raw_key)
            barrier.wait()
            answers[i] = send(api, i)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(CONCURRENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return answers


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["multipart", "proxied"])
def test_concurrent_uploads_cannot_together_exceed_the_quota(tenant_a, path):
    size = 40 * KIB
    tight_plan(tenant_a.tenant, storage_bytes=size + size // 2)  # room for one upload, not two
    content = csv_of(size)

    def send(api, i):
        if path == "multipart":
            return start(api, size, name=f"race {i}")
        return api.post("/api/v1/datasets", {"name": f"race {i}", "file": _file(content)}, format="multipart")

    answers = _race(tenant_a.raw_key, send)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] + [403] * (CONCURRENT - 1), statuses
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 403} == {"storage_quota_exceeded"}
    stored = Dataset.objects.filter(tenant=tenant_a.tenant)
    assert stored.count() == 1 and stored.get().size_bytes == size
    assert storage_used(client_for(tenant_a.raw_key)) == size
    if path == "proxied":  # the refused uploads' objects were removed again
        assert tenant_objects(tenant_a.tenant) == [stored.get().object_key]
