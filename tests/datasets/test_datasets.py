"""Datasets through the API against the real S3 server: upload, validation, versions, limits, PII."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core import storage
from datasets.models import Dataset
from datasets.sample_data import write_csv
from tenants.models import Plan
from tests.support.datasets import CSV, tenant_objects, upload, validated

pytestmark = pytest.mark.django_db


def test_upload_validate_and_read_back(api_a, tenant_a):
    response = upload(api_a, CSV, label_column="clicked")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "validating" and body["version"] == 1
    assert len(body["sha256"]) == 64 and body["size_bytes"] == len(CSV.encode())
    key = f"tenants/{tenant_a.tenant.id}/datasets/{body['id']}/data.csv"
    assert tenant_objects(tenant_a.tenant) == [key]

    dataset = validated(body["id"])
    assert dataset.status == "ready", dataset.errors
    types = {column["name"]: column["type"] for column in dataset.schema}
    assert types == {
        "user": "string",
        "item_sequence": "id_sequence",
        "price": "float",
        "active": "boolean",
        "comment": "text",
        "clicked": "integer",
    }
    detail = api_a.get(f"/api/v1/datasets/{body['id']}").json()
    assert detail["row_count"] == 20
    stats = detail["stats"]
    assert stats["label_distribution"] == {"0": 10, "1": 10}
    assert stats["columns"]["price"]["min"] == 0 and stats["columns"]["price"]["max"] == 28.5
    assert stats["columns"]["item_sequence"]["vocabulary_size"] == 23
    assert stats["columns"]["item_sequence"]["length"]["p50"] == 4
    assert stats["columns"]["user"]["distinct"] == 20
    assert stats["columns"]["comment"]["length"]["max"] >= 40

    preview = api_a.get(f"/api/v1/datasets/{body['id']}/preview?rows=3").json()
    assert preview["columns"][0] == "user"
    assert preview["rows"][0][:2] == ["u0", "0 1 2 3"]
    assert len(preview["rows"]) == 3


def test_chinese_text_is_text(api_a):
    out = io.StringIO()
    write_csv("sentiment", 50, out, seed=1)
    body = upload(api_a, out.getvalue(), name="news", label_column="sentiment").json()
    dataset = validated(body["id"])
    assert {c["name"]: c["type"] for c in dataset.schema} == {"headline": "text", "sentiment": "string"}
    assert set(dataset.stats["label_distribution"]) == {"positive", "negative", "neutral"}


@pytest.mark.parametrize("kind", ["ctr", "sentiment", "intent", "tabular"])
def test_sample_generators_validate(api_a, kind):
    from datasets.sample_data import LABELS

    out = io.StringIO()
    write_csv(kind, 200, out, seed=3)
    body = upload(api_a, out.getvalue(), name=kind, label_column=LABELS[kind]).json()
    dataset = validated(body["id"])
    assert dataset.status == "ready", dataset.errors
    assert dataset.row_count == 200
    assert len(dataset.stats["label_distribution"]) >= 2


def test_jsonl_and_parquet(api_a):
    lines = "".join(json.dumps({"text": f"row {i}", "label": i % 3, "ids": [1, 2, i]}) + "\n" for i in range(9))
    body = upload(api_a, lines, name="lines", filename="x.jsonl", label_column="label").json()
    assert body["format"] == "jsonl"
    dataset = validated(body["id"])
    assert dataset.status == "ready", dataset.errors
    assert {c["name"]: c["type"] for c in dataset.schema}["ids"] == "id_sequence"

    sink = io.BytesIO()
    pq.write_table(pa.table({"x": [1.0, 2.5, 3.0], "city": ["a", "b", "a"], "y": [0, 1, 0]}), sink)
    body = upload(api_a, sink.getvalue(), name="table", filename="t.bin", label_column="y").json()
    assert body["format"] == "parquet"
    dataset = validated(body["id"])
    assert dataset.status == "ready", dataset.errors
    assert dataset.stats["columns"]["x"]["mean"] == pytest.approx(2.1666667)
    preview = api_a.get(f"/api/v1/datasets/{body['id']}/preview?rows=2").json()
    assert preview == {"columns": ["x", "city", "y"], "rows": [[1.0, "a", 0], [2.5, "b", 1]]}


def test_versions_and_duplicates(api_a, api_b):
    first = upload(api_a, CSV).json()
    second = upload(api_a, CSV).json()
    third = upload(api_a, CSV + "u99,1 2,1.0,true,x,1\n").json()
    assert [first["version"], second["version"], third["version"]] == [1, 2, 3]
    assert second["duplicate_of"] == first["id"]
    assert third["duplicate_of"] is None
    # Another tenant's identical upload is its own version 1 and never points at tenant A's row.
    other = upload(api_b, CSV).json()
    assert other["version"] == 1 and other["duplicate_of"] is None

    listed = api_a.get("/api/v1/datasets?name=clicks").json()
    assert [d["version"] for d in listed["results"]] == [3, 2, 1]
    assert api_a.get("/api/v1/datasets?status=ready").json()["count"] == 0
    assert api_a.get("/api/v1/datasets?status=validating").json()["count"] == 3
    assert api_a.get("/api/v1/datasets?status=bogus").status_code == 400


def test_delete_removes_objects(api_a, tenant_a, django_capture_on_commit_callbacks):
    body = upload(api_a, CSV).json()
    assert tenant_objects(tenant_a.tenant)
    with django_capture_on_commit_callbacks(execute=True):
        assert api_a.delete(f"/api/v1/datasets/{body['id']}").status_code == 204
    assert tenant_objects(tenant_a.tenant) == []
    assert api_a.get(f"/api/v1/datasets/{body['id']}").status_code == 404


@pytest.mark.parametrize("mode", ["hash", "drop"])
def test_pii_never_reaches_storage(api_a, tenant_a, tenant_b, mode):
    content = "email,amount,label\nalice@example.com,10,1\nbob@example.com,20,0\nalice@example.com,5,1\n"
    body = upload(api_a, content, column_tags={"email": "pii"}, pii_mode=mode, label_column="label").json()
    assert body["status"] == "validating", body
    stored = storage.get_bytes(body_key(tenant_a, body)).decode()
    assert "alice" not in stored and "bob" not in stored
    dataset = validated(body["id"])
    columns = [c["name"] for c in dataset.schema]
    if mode == "drop":
        assert columns == ["amount", "label"]
        return
    rows = api_a.get(f"/api/v1/datasets/{body['id']}/preview").json()["rows"]
    hashes = [row[0] for row in rows]
    assert hashes[0] == hashes[2] != hashes[1]  # equal values stay joinable
    assert all(h.startswith("pii_") for h in hashes)
    # The same value hashes differently for another tenant.
    other = upload(client_for_b(tenant_b), content, column_tags={"email": "pii"}).json()
    other_rows = storage.get_bytes(body_key(tenant_b, other)).decode().splitlines()
    assert other_rows[1].split(",")[0] != hashes[0]


def client_for_b(tenant_b):
    from tests.conftest import client_for

    return client_for(tenant_b.raw_key)


def body_key(made, body) -> str:
    return f"tenants/{made.tenant.id}/datasets/{body['id']}/data.{body['format']}"


def test_plan_dataset_limit_is_413_and_leaves_nothing(api_a, tenant_a):
    Plan.objects.filter(pk=tenant_a.tenant.plan_id).update(max_dataset_bytes=100)
    response = upload(api_a, CSV)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "dataset_too_large"
    assert tenant_objects(tenant_a.tenant) == []
    assert not Dataset.objects.filter(tenant=tenant_a.tenant).exists()


def test_storage_quota_is_403_and_leaves_nothing(api_a, tenant_a):
    assert upload(api_a, CSV).status_code == 201
    Plan.objects.filter(pk=tenant_a.tenant.plan_id).update(storage_bytes=len(CSV) + 50)
    response = upload(api_a, CSV, name="second")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "storage_quota_exceeded"
    assert len(tenant_objects(tenant_a.tenant)) == 1
    assert Dataset.objects.filter(tenant=tenant_a.tenant).count() == 1


BAD_UPLOADS = [
    ("empty file", b"", {}, "empty_file"),
    ("header only", b"a,b,c\n", {}, "header_only"),
    ("binary", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", {}, "binary_file"),
    ("bad utf-8", b"a,b\n\xff\xfe,1\n", {}, "bad_encoding"),
    ("duplicate columns", b"a,b,a\n1,2,3\n", {}, "duplicate_columns"),
    ("empty column name", b"a,,c\n1,2,3\n", {}, "empty_column_name"),
    ("unknown label", b"a,b\n1,2\n", {"label_column": "nope"}, "unknown_label_column"),
    ("corrupt parquet", b"PAR1garbagegarbagePAR1", {}, "corrupt_parquet"),
    ("json lines not objects", b'{"a": 1}\n[1, 2]\n', {}, "json_not_object"),
    ("ragged first row", b"a,b\n1,2,3\n", {}, "ragged_rows"),
    (
        "too many columns",
        (",".join(f"c{i}" for i in range(1001)) + "\n" + ",".join("1" * 1001) + "\n").encode(),
        {},
        "too_many_columns",
    ),
    ("unknown format", b"a,b\n1,2\n", {"format": "xlsx"}, "format"),
    ("empty name", b"a,b\n1,2\n", {"name": ""}, "invalid_name"),
    ("long name", b"a,b\n1,2\n", {"name": "n" * 101}, "name"),
    ("name with a path", b"a,b\n1,2\n", {"name": "../../etc/passwd"}, "invalid_name"),
    ("name with NUL", b"a,b\n1,2\n", {"name": "a\x00b"}, "name"),
    ("unknown field", b"a,b\n1,2\n", {"colour": "blue"}, "colour"),
    ("pii tag on a missing column", b"a,b\n1,2\n", {"column_tags": {"email": "pii"}}, "unknown_tagged_column"),
    ("bad tag", b"a,b\n1,2\n", {"column_tags": {"a": "secret"}}, "invalid_column_tags"),
    ("tags not json", b"a,b\n1,2\n", {"column_tags": "{oops"}, "column_tags"),
]


@pytest.mark.parametrize("content, fields, expected", [b[1:] for b in BAD_UPLOADS], ids=[b[0] for b in BAD_UPLOADS])
def test_bad_uploads_are_4xx_and_leave_nothing(api_a, tenant_a, content, fields, expected):
    fields = dict(fields)
    name = fields.pop("name", "bad")
    response = upload(api_a, content, name=name, **fields)
    assert 400 <= response.status_code < 500, response.content
    error = response.json()["error"]
    assert error["code"] == expected or expected in error["details"], error
    assert error["message"]
    assert tenant_objects(tenant_a.tenant) == []
    assert not Dataset.objects.filter(tenant=tenant_a.tenant).exists()


def test_missing_file_and_json_body_are_refused(api_a):
    assert api_a.post("/api/v1/datasets", {"name": "x"}, format="multipart").status_code == 400
    response = api_a.post("/api/v1/datasets", {"name": "x"}, format="json")
    assert response.status_code == 415


PROBLEMS_FOUND_BY_VALIDATION = [
    ("ragged later row", "a,b\n" + "1,2\n" * 2000 + "5,6,7\n", "", "ragged_rows"),
    ("bad utf-8 later", b"a,b\n" + b"1,2\n" * 30000 + b"\xff,1\n", "", "bad_encoding"),
    ("single class label", "a,label\n1,x\n2,x\n3,x\n", "label", "single_class_label"),
    ("json line later not object", '{"a": 1}\n' * 2000 + '"text"\n', "", "json_not_object"),
]


@pytest.mark.parametrize(
    "content, label, code",
    [p[1:] for p in PROBLEMS_FOUND_BY_VALIDATION],
    ids=[p[0] for p in PROBLEMS_FOUND_BY_VALIDATION],
)
def test_problems_found_by_validation_make_it_invalid(api_a, tenant_a, content, label, code):
    response = upload(api_a, content, label_column=label, filename="f.jsonl" if "json" in code else "f.csv")
    assert response.status_code == 201, response.json()
    dataset = validated(response.json()["id"])
    assert dataset.status == "invalid"
    assert dataset.errors[0]["code"] == code
    assert dataset.errors[0]["message"]
    assert tenant_objects(tenant_a.tenant) == []  # the unusable object is removed
    assert api_a.get(f"/api/v1/datasets/{dataset.id}/preview").status_code == 409


def test_validation_is_idempotent(api_a):
    body = upload(api_a, CSV).json()
    first = validated(body["id"])
    second = validated(body["id"])
    assert first.status == second.status == "ready"
    assert first.validated_at == second.validated_at


@pytest.mark.parametrize("rows", ["0", "101", "abc", "-1"])
def test_preview_rows_are_bounded(api_a, rows):
    body = upload(api_a, CSV).json()
    response = api_a.get(f"/api/v1/datasets/{body['id']}/preview?rows={rows}")
    assert response.status_code == 400
    assert "rows" in response.json()["error"]["details"]


def test_read_only_key_cannot_upload_or_delete(tenant_a, api_a):
    from tests.conftest import client_for
    from tests.support.factories import make_key

    reader = client_for(make_key(tenant_a.tenant, scopes=["read"]).raw_key)
    assert upload(reader, CSV).status_code == 403
    body = upload(api_a, CSV).json()
    assert reader.delete(f"/api/v1/datasets/{body['id']}").status_code == 403
    assert reader.get(f"/api/v1/datasets/{body['id']}").status_code == 200
