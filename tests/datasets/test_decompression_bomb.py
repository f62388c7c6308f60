"""Parquet decompression bombs: a file of a few hundred bytes that decodes to gigabytes.

Every read path (direct upload, multipart complete, validation, API preview, dashboard preview, the trainer's
loader) must refuse it with a machine-readable code while the process's memory barely moves. On the code before
this test, the first batch of 4,096 rows was turned into Python strings at once: about 1.5 GiB for these files.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import urllib.request
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core import storage
from datasets import services
from datasets.models import Dataset
from datasets.readers import DatasetFormatError
from tests.support.dashboard import signed_in

pytestmark = pytest.mark.django_db

MEMORY_GROWTH_LIMIT = 200 * 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE")


def dictionary_bomb(*, value_bytes: int, rows: int, store_schema: bool = True) -> bytes:
    """One long string stored once in a dictionary page, then repeated ``rows`` times by run-length indices.

    Built from a DictionaryArray, so building it costs one copy of the string, never ``rows`` copies.
    Without the stored Arrow schema, a reader decodes it as a plain string column (Arrow's C++ does the
    expanding); with it, as a dictionary column (``to_pylist`` does).
    """
    values = pa.array(["x" * value_bytes])
    column = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), values)
    labels = pa.DictionaryArray.from_arrays(pa.array([i % 2 for i in range(rows)], pa.int32()), pa.array(["a", "b"]))
    sink = io.BytesIO()
    pq.write_table(pa.table({"comment": column, "label": labels}), sink, compression="zstd", store_schema=store_schema)
    return sink.getvalue()


# ~1.1 MiB of text repeated 1,500 times: the footer declares 1.1 MiB uncompressed for a file of under 1 KiB.
CODEC_BOMB = dictionary_bomb(value_bytes=1_100_000, rows=1_500)
# 384 KiB repeated 4,000 times (1.5 GiB decoded) in a file of under 1 KiB; the footer declares only 384 KiB,
# so it is the decode-time guard that refuses it, once what it decoded passes the limit.
EXPANSION_BOMB = dictionary_bomb(value_bytes=384 * 1024, rows=4_000, store_schema=False)


class PeakMemory:
    """The process's resident memory sampled every few milliseconds while the block runs.

    RSS, not tracemalloc: Arrow allocates outside Python's allocator. ``growth`` is the
    highest sample minus the resident size just before the block.
    """

    def __enter__(self) -> PeakMemory:
        self.before = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def growth(self) -> int:
        return self.peak - self.before

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * PAGE


def upload(client, content: bytes, *, name: str = "bomb"):
    handle = io.BytesIO(content)
    handle.name = "data.parquet"
    return client.post("/api/v1/datasets", {"name": name, "file": handle}, format="multipart")


def error_code(response) -> str:
    return response.json()["error"]["code"]


def stored_ready_dataset(tenant, content: bytes) -> Dataset:
    """A READY dataset whose stored object is ``content`` (as if written before the readers were guarded)."""
    dataset = Dataset(
        tenant=tenant, id=uuid.uuid4(), name=f"stored {uuid.uuid4().hex[:8]}", version=1, format="parquet"
    )
    dataset.object_key = services.object_key(dataset)
    dataset.status = Dataset.Status.READY
    dataset.size_bytes = len(content)
    dataset.schema = [{"name": "comment", "type": "text"}, {"name": "label", "type": "string"}]
    storage.upload_stream(dataset.object_key, io.BytesIO(content))
    dataset.save()
    return dataset


def test_the_bombs_are_tiny():
    assert len(CODEC_BOMB) < 1024 and len(EXPANSION_BOMB) < 1024


def test_direct_upload_refuses_a_codec_bomb_from_its_footer(api_a, tenant_a):
    with PeakMemory() as memory:
        response = upload(api_a, CODEC_BOMB)
    print(f"codec bomb upload: {response.status_code}, RSS growth {memory.growth / 2**20:.1f} MiB")
    assert response.status_code == 400, response.json()
    body = response.json()["error"]
    assert body["code"] == "decompression_bomb"
    assert body["details"]["size"] == len(CODEC_BOMB) and body["details"]["declared"] > 1_000_000
    assert memory.growth < MEMORY_GROWTH_LIMIT
    assert not Dataset.objects.filter(tenant=tenant_a.tenant).exists()


def test_direct_upload_refuses_what_a_file_decodes_to(api_a, tenant_a, settings):
    settings.DATASET_MAX_UNCOMPRESSED_BYTES = 64 * 1024 * 1024
    with PeakMemory() as memory:
        response = upload(api_a, EXPANSION_BOMB)
    print(f"expansion bomb upload: {response.status_code}, RSS growth {memory.growth / 2**20:.1f} MiB")
    assert response.status_code == 400, response.json()
    assert error_code(response) == "file_too_large_uncompressed"
    assert memory.growth < MEMORY_GROWTH_LIMIT
    assert not Dataset.objects.filter(tenant=tenant_a.tenant).exists()


def test_multipart_complete_refuses_a_bomb_and_discards_it(api_a, tenant_a):
    started = api_a.post(
        "/api/v1/datasets/uploads",
        {"name": "bomb", "size": len(CODEC_BOMB), "filename": "data.parquet"},
        format="json",
    )
    assert started.status_code == 201, started.json()
    body = started.json()
    request = urllib.request.Request(body["parts"][0]["url"], data=CODEC_BOMB, method="PUT")
    with urllib.request.urlopen(request) as answer:
        etag = answer.headers["ETag"]
    with PeakMemory() as memory:
        done = api_a.post(
            f"/api/v1/datasets/uploads/{body['id']}/complete",
            {"parts": [{"part_number": 1, "etag": etag}]},
            format="json",
        )
    assert done.status_code == 400, done.json()
    assert error_code(done) == "decompression_bomb"
    assert memory.growth < MEMORY_GROWTH_LIMIT
    assert not Dataset.objects.filter(tenant=tenant_a.tenant).exists()


def test_validation_marks_a_bomb_found_past_the_head_invalid(api_a, tenant_a, settings):
    # 32 KiB x 10,000 rows: the first 1,000 rows checked at upload decode to 32 MiB (allowed), the whole to 320 MiB.
    settings.DATASET_MAX_UNCOMPRESSED_BYTES = 64 * 1024 * 1024
    response = upload(api_a, dictionary_bomb(value_bytes=32 * 1024, rows=10_000, store_schema=False))
    assert response.status_code == 201, response.json()
    with PeakMemory() as memory:
        services.validate_dataset(dataset_id=response.json()["id"])
    dataset = Dataset.objects.get(pk=response.json()["id"])
    assert dataset.status == Dataset.Status.INVALID
    assert [error["code"] for error in dataset.errors] == ["file_too_large_uncompressed"]
    assert memory.growth < MEMORY_GROWTH_LIMIT
    shown = api_a.get(f"/api/v1/datasets/{dataset.id}").json()
    assert shown["status"] == "invalid" and shown["errors"][0]["code"] == "file_too_large_uncompressed"


def test_preview_of_a_stored_bomb_answers_4xx(api_a, tenant_a):
    dataset = stored_ready_dataset(tenant_a.tenant, CODEC_BOMB)
    with PeakMemory() as memory:
        response = api_a.get(f"/api/v1/datasets/{dataset.id}/preview?rows=100")
    print(f"codec bomb preview: {response.status_code}, RSS growth {memory.growth / 2**20:.1f} MiB")
    assert response.status_code == 422, response.content
    assert error_code(response) == "decompression_bomb"
    assert memory.growth < MEMORY_GROWTH_LIMIT


def test_preview_of_a_stored_expansion_bomb_stays_small(api_a, tenant_a):
    # Under the default limits this file's first 100 rows are allowed (38 MiB decoded): the preview streams
    # them a few at a time and abbreviates each cell, so neither the process nor the response balloons.
    dataset = stored_ready_dataset(tenant_a.tenant, EXPANSION_BOMB)
    with PeakMemory() as memory:
        response = api_a.get(f"/api/v1/datasets/{dataset.id}/preview?rows=100")
    assert response.status_code == 200, response.content
    rows = response.json()["rows"]
    assert len(rows) == 100 and len(rows[0][0]) < 10_000 and rows[0][0].startswith("xxx")
    assert len(response.content) < 2 * 1024 * 1024
    assert memory.growth < MEMORY_GROWTH_LIMIT


def test_dashboard_page_of_a_stored_bomb_renders(tenant_a):
    dataset = stored_ready_dataset(tenant_a.tenant, CODEC_BOMB)
    with PeakMemory() as memory:
        response = signed_in(tenant_a.owner).get(f"/datasets/{dataset.id}/")
    assert response.status_code == 200
    assert memory.growth < MEMORY_GROWTH_LIMIT


def test_trainer_loader_refuses_a_stored_bomb(tenant_a, settings):
    from training.trainer import data

    settings.DATASET_MAX_UNCOMPRESSED_BYTES = 64 * 1024 * 1024
    for content, code in [(CODEC_BOMB, "decompression_bomb"), (EXPANSION_BOMB, "file_too_large_uncompressed")]:
        dataset = stored_ready_dataset(tenant_a.tenant, content)
        with PeakMemory() as memory, pytest.raises(DatasetFormatError) as refused:
            data.load(
                object_key=dataset.object_key,
                fmt="parquet",
                schema=dataset.schema,
                feature_columns=["comment"],
                label_column="label",
                validation_split=0.2,
                seed=1,
            )
        assert refused.value.code == code
        assert memory.growth < MEMORY_GROWTH_LIMIT


def test_ordinary_parquet_still_reads(api_a, tenant_a):
    table = pa.table({"text": [f"row {i} " * 20 for i in range(5000)], "label": [i % 2 for i in range(5000)]})
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    response = upload(api_a, sink.getvalue(), name="plain")
    assert response.status_code == 201, response.json()
    services.validate_dataset(dataset_id=response.json()["id"])
    assert Dataset.objects.get(pk=response.json()["id"]).status == Dataset.Status.READY
    preview = api_a.get(f"/api/v1/datasets/{response.json()['id']}/preview?rows=2").json()
    assert preview["rows"][1] == ["row 1 " * 20, 1]
    assert json.dumps(preview)
