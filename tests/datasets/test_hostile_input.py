"""Inputs found by review that once gave 500s or stuck rows: each is a clean 4xx or a finished state now."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.utils import timezone

from datasets.models import Dataset
from tenants.models import Role
from tests.conftest import client_for
from tests.support.datasets import tenant_objects, upload, validated
from tests.support.factories import make_job, make_key

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/api/v1/members", "/api/v1/api-keys", "/api/v1/jobs", "/api/v1/datasets/uploads"])
def test_deeply_nested_json_is_400(api_a, path):
    response = api_a.generic("POST", path, "[" * 100_000, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_huge_numbers_and_non_finite_values_are_profiled_safely(api_a):
    content = "id,big,label\n" + "".join(f"{i},{'9' * 400},{i % 2}\n" for i in range(5)) + "9,1e308,0\n10,1e308,1\n"
    body = upload(api_a, content, label_column="label").json()
    dataset = validated(body["id"])
    assert dataset.status == "ready", dataset.errors
    assert api_a.get(f"/api/v1/datasets/{dataset.id}").status_code == 200

    lines = '{"x": 1.5, "y": 0}\n{"x": Infinity, "y": 1}\n'
    response = upload(api_a, lines, filename="f.jsonl", name="nonfinite")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


def test_parquet_nan_previews_as_null(api_a):
    sink = io.BytesIO()
    pq.write_table(pa.table({"x": [1.0, float("nan")], "y": [0, 1]}), sink)
    body = upload(api_a, sink.getvalue(), name="nan", filename="n.parquet").json()
    validated(body["id"])
    preview = api_a.get(f"/api/v1/datasets/{body['id']}/preview").json()
    assert preview["rows"] == [[1.0, 0], [None, 1]]


def test_a_file_without_line_breaks_is_refused(api_a, tenant_a, settings, monkeypatch):
    monkeypatch.setattr("datasets.readers.MAX_LINE_BYTES", 4096)
    response = upload(api_a, "a," + "x" * 10_000)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "line_too_long"
    assert tenant_objects(tenant_a.tenant) == []


def test_keyed_column_names_with_spaces_are_refused(api_a):
    response = upload(api_a, '{" a": 1}\n{" a": 2}\n', filename="f.jsonl")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "column_name_whitespace"


def test_deep_json_inside_a_late_line_makes_it_invalid_not_stuck(api_a):
    content = '{"a": 1}\n' * 1500 + '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
    body = upload(api_a, content, filename="f.jsonl").json()
    dataset = validated(body["id"])
    assert dataset.status == "invalid"
    assert dataset.errors[0]["code"] == "malformed_json"


def test_unexpected_reader_errors_mark_invalid(api_a, monkeypatch):
    body = upload(api_a, "a,label\n1,x\n2,y\n", label_column="label").json()

    def explode(*args, **kwargs):
        raise RuntimeError("surprise")

    monkeypatch.setattr("datasets.services.DatasetProfile.add_all", explode)
    dataset = validated(body["id"])
    assert dataset.status == "invalid"
    assert dataset.errors[0]["code"] == "unreadable"


def test_validation_of_a_deleted_dataset_does_not_bring_it_back(api_a):
    body = upload(api_a, "a,label\n1,x\n2,y\n").json()
    row = Dataset.objects.get(pk=body["id"])
    Dataset.objects.filter(pk=row.pk).delete()
    from datasets import services

    services.validate_dataset(dataset_id=row.pk)
    assert not Dataset.objects.filter(pk=row.pk).exists()


def test_a_dataset_whose_jobs_finished_can_be_deleted(tenant_a, api_a, django_capture_on_commit_callbacks):
    job = make_job(tenant_a.tenant)
    job.status = "succeeded"
    job.save()
    with django_capture_on_commit_callbacks(execute=True):
        assert api_a.delete(f"/api/v1/datasets/{job.dataset_id}").status_code == 204
    job.refresh_from_db()
    assert job.dataset_id is None and job.status == "succeeded"


@pytest.mark.parametrize("query", ["lines=%C2%B2", "lines=0", "lines=abc", "lines=501"])
def test_log_tail_bounds(tenant_a, api_a, query):
    job = make_job(tenant_a.tenant)
    assert api_a.get(f"/api/v1/jobs/{job.id}/logs?{query}").status_code == 400


def test_nul_in_filters_is_400(api_a):
    assert api_a.get("/api/v1/datasets?name=a%00b").status_code == 400
    assert api_a.get("/api/v1/jobs?model_name=a%00b").status_code == 400


def test_admin_cannot_revoke_an_owner_key(tenant_a):
    admin = client_for(make_key(tenant_a.tenant, role=Role.ADMIN).raw_key)
    response = admin.delete(f"/api/v1/api-keys/{tenant_a.api_key.id}")
    assert response.status_code == 403
    assert client_for(tenant_a.raw_key).get("/api/v1/tenant").status_code == 200


def test_a_key_cannot_outlive_its_maker(tenant_a):
    soon = timezone.now() + timedelta(hours=1)
    maker = client_for(make_key(tenant_a.tenant, role=Role.ADMIN, expires_at=soon).raw_key)
    created = maker.post("/api/v1/api-keys", {"name": "child", "scopes": ["read"]}, format="json").json()
    assert created["expires_at"] is not None
    later = (soon + timedelta(days=1)).isoformat()
    body = {"name": "x", "scopes": ["read"], "expires_at": later}
    response = maker.post("/api/v1/api-keys", body, format="json")
    assert response.status_code == 403
    assert json.loads(response.content)["error"]["code"] == "expiry_too_late"


HOSTILE_NAMES = [
    "../../other-tenant/data.csv",
    "..\\..\\windows.csv",
    "/etc/passwd",
    "a/b/c.csv",
    "nul\x00byte.csv",
    "x" * 5000 + ".csv",
    "\u202egnp.csv",  # right-to-left override
    "\uff0e\uff0e\uff0fdata.csv",  # full-width dots and slash
    "CON.csv",
    "",
]


@pytest.mark.parametrize("filename", HOSTILE_NAMES, ids=range(len(HOSTILE_NAMES)))
def test_hostile_file_and_dataset_names_stay_inside_the_tenants_prefix(api_a, tenant_a, tenant_b, filename):
    from core import storage

    def outside() -> set[str]:
        return set(storage.list_keys("tenants/")) - set(storage.list_keys(storage.tenant_prefix(tenant_a.tenant.id)))

    outside_before = outside()
    for name in ("clicks", filename[:100] or "empty"):
        response = upload(api_a, b"a,b\n1,2\n", name=name, filename=filename or "x")
        assert response.status_code in (201, 400), response.content
        if response.status_code == 201:
            body = response.json()
            key = Dataset.objects.get(pk=body["id"]).object_key
            assert key == f"tenants/{tenant_a.tenant.id}/datasets/{body['id']}/data.csv"
            assert "\x00" not in body["original_filename"] and len(body["original_filename"]) <= 255
        else:
            assert response.json()["error"]["code"] in {"invalid_name", "validation_error", "parse_error"}
    assert outside() == outside_before
