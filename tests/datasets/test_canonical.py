"""The columnar path: validation writes the canonical Parquet copy in the pass that profiles, and the columnar
profile equals the value-by-value reference on every sample dataset."""

from __future__ import annotations

import hashlib
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.management import call_command

from core import storage
from datasets import canonical
from datasets.batches import open_batches
from datasets.models import Dataset
from datasets.profiling import DatasetProfile
from datasets.readers import open_rows
from datasets.sample_data import write_csv
from tests.support.datasets import CSV, tenant_objects, upload, validated

pytestmark = pytest.mark.django_db


def _stored_parquet(key: str) -> tuple[bytes, pq.ParquetFile]:
    data = storage.get_bytes(key)
    return data, pq.ParquetFile(io.BytesIO(data))


def test_validation_writes_the_canonical_copy(api_a, tenant_a):
    body = upload(api_a, CSV, label_column="clicked").json()
    dataset = validated(body["id"])
    assert dataset.status == "ready"
    folder = f"tenants/{tenant_a.tenant.id}/datasets/{dataset.id}/"
    assert dataset.canonical_key == folder + canonical.FILE_NAME
    assert sorted(tenant_objects(tenant_a.tenant)) == [folder + canonical.FILE_NAME, folder + "data.csv"]
    data, parquet = _stored_parquet(dataset.canonical_key)
    assert dataset.canonical_sha256 == hashlib.sha256(data).hexdigest()
    assert dataset.canonical_size_bytes == len(data)
    table = parquet.read()
    assert table.column_names == [c["name"] for c in dataset.schema]
    assert table.num_rows == dataset.row_count == 20
    _, rows = open_rows("csv", io.BytesIO(CSV.encode()))
    assert table.to_pylist() == [row for _, row in rows]  # CSV cells as strings, empty cells null
    assert api_a.get(f"/api/v1/datasets/{dataset.id}").json()["canonical_sha256"] == dataset.canonical_sha256


def test_row_groups_are_bounded(monkeypatch, tenant_a):
    monkeypatch.setattr(canonical, "ROW_GROUP_ROWS", 100)
    out = io.StringIO()
    write_csv("ctr", 450, out)
    _, batches = open_batches("csv", io.BytesIO(out.getvalue().encode()))
    writer = canonical.CanonicalWriter(storage.tenant_key(tenant_a.tenant.id, "datasets", "test", canonical.FILE_NAME))
    for batch in batches:
        for piece in (batch.slice(i, 50) for i in range(0, len(batch), 50)):
            writer.write(piece)
    sha256, size = writer.finish()
    data, parquet = _stored_parquet(writer.key)
    assert (sha256, size) == (hashlib.sha256(data).hexdigest(), len(data))
    metadata = parquet.metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [100, 100, 100, 100, 50]


def test_preview_reads_the_canonical_copy(api_a):
    body = upload(api_a, CSV, label_column="clicked").json()
    dataset = validated(body["id"])
    storage.delete_key(dataset.object_key)  # the original is not read any more
    preview = api_a.get(f"/api/v1/datasets/{dataset.id}/preview?rows=2").json()
    assert preview["rows"][1][:3] == ["u1", "1 2 3 4", "1.5"]


def test_json_lines_are_kept_as_the_text_they_profile_as(api_a):
    lines = [{"ids": [1, 2, 3], "n": 2, "ok": True, "meta": {"a": 1}, "label": "x" if i % 2 else "y"} for i in range(4)]
    body = upload(api_a, "\n".join(json.dumps(line) for line in lines), filename="d.jsonl", label_column="label").json()
    dataset = validated(body["id"])
    assert dataset.status == "ready", dataset.errors
    assert {c["name"]: c["type"] for c in dataset.schema} == {
        "ids": "id_sequence",
        "n": "integer",
        "ok": "boolean",
        "meta": "text",  # JSON text with spaces, as before (it was Python's repr then)
        "label": "string",
    }
    _, parquet = _stored_parquet(dataset.canonical_key)
    assert parquet.read().to_pylist()[0] == {"ids": "1 2 3", "n": "2", "ok": "true", "meta": '{"a": 1}', "label": "y"}


def test_parquet_keeps_its_types(api_a):
    table = pa.table({"ids": [[1, 2], [3]], "price": [1.5, None], "label": ["a", "b"]})
    out = io.BytesIO()
    pq.write_table(table, out)
    dataset = validated(upload(api_a, out.getvalue(), filename="d.parquet", label_column="label").json()["id"])
    _, parquet = _stored_parquet(dataset.canonical_key)
    assert parquet.read().to_pylist() == table.to_pylist()
    assert parquet.schema_arrow.field("price").type == pa.float64()


@pytest.mark.parametrize("kind", ["ctr", "sentiment", "intent", "tabular"])
def test_the_columnar_profile_equals_the_value_by_value_one(kind):
    out = io.StringIO()
    write_csv(kind, 3000, out)
    data = out.getvalue().encode()
    columns, rows = open_rows("csv", io.BytesIO(data))
    label = columns[-1]
    reference = DatasetProfile(columns, label_column=label)
    for _, row in rows:
        reference.add(row)
    columnar = DatasetProfile(columns, label_column=label)
    columnar.add_all(open_batches("csv", io.BytesIO(data))[1])
    assert columnar.schema() == reference.schema()
    assert columnar.stats() == reference.stats()


def test_datasets_validated_before_copies_existed_get_one(api_a, tenant_a):
    dataset = validated(upload(api_a, CSV, label_column="clicked").json()["id"])
    expected = dataset.canonical_sha256
    storage.delete_key(dataset.canonical_key)
    Dataset.objects.filter(pk=dataset.pk).update(canonical_key="", canonical_sha256="", canonical_size_bytes=0)
    out = io.StringIO()
    call_command("write_canonical_copies", stdout=out)
    assert "wrote 1 canonical copies; 0 failed" in out.getvalue()
    dataset.refresh_from_db()
    assert dataset.canonical_sha256 == expected  # the same bytes validation wrote
    assert hashlib.sha256(storage.get_bytes(dataset.canonical_key)).hexdigest() == expected
    call_command("write_canonical_copies", stdout=out)  # again: nothing left to do
    assert out.getvalue().endswith("wrote 0 canonical copies; 0 failed\n")
