"""Direct-to-S3 multipart uploads with presigned part URLs, and their cleanup."""

from __future__ import annotations

import urllib.request
from datetime import timedelta

import pytest
from django.utils import timezone

from core import storage
from datasets import services
from datasets.models import Dataset, DatasetUpload
from tests.support.datasets import PART, big_csv, put_part, put_parts, start

pytestmark = pytest.mark.django_db


def test_multipart_upload_round_trip(api_a, tenant_a):
    content = big_csv(PART + 1000)
    response = start(api_a, content)
    assert response.status_code == 201, response.json()
    upload = response.json()
    assert upload["status"] == "pending" and upload["dataset"]["status"] == "uploading"
    assert len(upload["parts"]) == 2 and upload["part_size"] == PART

    etags = put_parts(upload, content)
    done = api_a.post(f"/api/v1/datasets/uploads/{upload['id']}/complete", {"parts": etags}, format="json")
    assert done.status_code == 200, done.json()
    dataset = done.json()
    assert dataset["status"] == "validating" and dataset["format"] == "csv"

    services.validate_dataset(dataset_id=dataset["id"])
    ready = Dataset.objects.get(pk=dataset["id"])
    assert ready.status == "ready", ready.errors
    assert ready.size_bytes == len(content)
    import hashlib

    assert ready.sha256 == hashlib.sha256(content).hexdigest()
    assert ready.stats["columns"]["item_sequence"]["type"] == "id_sequence"
    again = api_a.post(f"/api/v1/datasets/uploads/{upload['id']}/complete", {"parts": etags}, format="json")
    assert again.status_code == 409


def test_size_mismatch_is_refused_and_cleaned(api_a, tenant_a):
    content = b"a,label\n1,x\n2,y\n"
    upload = start(api_a, content + b"3,z\n").json()
    with pytest.raises(urllib.error.HTTPError) as refused:
        put_part(upload["parts"][0]["url"], content)  # the URL signs the declared length: S3 refuses fewer bytes
    assert refused.value.code == 403
    response = api_a.post(
        f"/api/v1/datasets/uploads/{upload['id']}/complete",
        {"parts": [{"part_number": 1, "etag": '"0123456789abcdef0123456789abcdef"'}]},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "size_mismatch"
    assert list(storage.list_keys(storage.tenant_prefix(tenant_a.tenant.id))) == []
    assert not Dataset.objects.filter(tenant=tenant_a.tenant).exists()


def test_bad_etags_are_400(api_a):
    upload = start(api_a, b"a,label\n1,x\n2,y\n").json()
    response = api_a.post(
        f"/api/v1/datasets/uploads/{upload['id']}/complete",
        {"parts": [{"part_number": 1, "etag": "nope"}]},
        format="json",
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    "extra, code",
    [
        ({"column_tags": {"label_column": "pii"}}, "pii_requires_proxied_upload"),
        ({"size": 0}, "size"),
        ({"size": "big"}, "size"),
        ({"name": ""}, "name"),
        ({"format": "xml"}, "format"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_upload_requests(api_a, tenant_a, extra, code):
    response = start(api_a, b"x" * 10, **extra)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code or code in error["details"]
    assert not DatasetUpload.objects.filter(tenant=tenant_a.tenant).exists()


def test_declared_size_over_the_plan_is_413(api_a, tenant_a):
    response = start(api_a, b"", size=tenant_a.tenant.plan.max_dataset_bytes + 1)
    assert response.status_code == 413


def test_abandoned_uploads_are_aborted(api_a, tenant_a):
    upload = start(api_a, b"a,label\n1,x\n2,y\n").json()
    put_part(upload["parts"][0]["url"], b"a,label\n1,x\n2,y\n")
    assert services.abort_abandoned_uploads() == 0
    DatasetUpload.objects.filter(pk=upload["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert services.abort_abandoned_uploads() == 1
    assert not DatasetUpload.objects.filter(pk=upload["id"]).exists()
    assert not Dataset.objects.filter(pk=upload["dataset"]["id"]).exists()
    assert services.abort_abandoned_uploads() == 0


def test_abort_by_delete(api_a, tenant_a):
    upload = start(api_a, b"a,label\n1,x\n2,y\n").json()
    assert api_a.delete(f"/api/v1/datasets/uploads/{upload['id']}").status_code == 204
    assert not Dataset.objects.filter(tenant=tenant_a.tenant).exists()
