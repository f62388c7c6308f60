"""Dataset test helpers: uploads through the API (whole files and multipart starts), validation in this process,
and the S3 keys a tenant holds.

Tests of every app upload datasets (training, audit, chaos), so these live here rather than in a test module.
"""

from __future__ import annotations

import io
import json
import urllib.request

from core import storage
from datasets import services
from datasets.models import Dataset

CSV = "user,item_sequence,price,active,comment,clicked\n" + "".join(
    f"u{i},{' '.join(str(i + k) for k in range(4))},{i * 1.5},{'true' if i % 2 else 'false'},"
    f"this is a long free text comment number {i},{i % 2}\n"
    for i in range(20)
)
# The multipart part size the API hands out (8 MiB), so a test can size a file to need two parts.
PART = 8 * 1024 * 1024


def upload(client, content: bytes | str, *, name="clicks", filename="data.csv", **fields):
    """``POST /api/v1/datasets`` with ``content`` as the file; dict fields are sent as JSON, as the form expects."""
    if isinstance(content, str):
        content = content.encode()
    data = {"name": name, "file": _named(content, filename)}
    for key, value in fields.items():
        data[key] = json.dumps(value) if isinstance(value, dict) else value
    return client.post("/api/v1/datasets", data, format="multipart")


def _named(content: bytes, filename: str):
    handle = io.BytesIO(content)
    handle.name = filename
    return handle


def validated(dataset_id) -> Dataset:
    """Validate the dataset in this process (no worker) and return it as stored."""
    services.validate_dataset(dataset_id=dataset_id)
    return Dataset.objects.get(pk=dataset_id)


def tenant_objects(tenant) -> list[str]:
    """Every S3 key under the tenant's prefix (not database rows: see ``tests.support.dashboard`` for those)."""
    return list(storage.list_keys(storage.tenant_prefix(tenant.id)))


def big_csv(min_bytes: int) -> bytes:
    """A two-class CSV of at least ``min_bytes``, for uploads that need more than one part."""
    row = b"12 85 3 9 44 71,1,some words here\n"
    header = b"item_sequence,clicked,comment\n"
    body = header + row * (min_bytes // len(row) + 1)
    return body.replace(b",1,", b",0,", 1000)  # two classes


def start(client, content: bytes, **extra):
    """Start a multipart upload sized for ``content`` (``POST /api/v1/datasets/uploads``)."""
    body = {"name": "big clicks", "size": len(content), "filename": "big.csv", "label_column": "clicked", **extra}
    return client.post("/api/v1/datasets/uploads", body, format="json")


def put_part(url: str, data: bytes) -> str:
    """PUT one part to its presigned URL, as a client would; returns the part's ETag."""
    request = urllib.request.Request(url, data=data, method="PUT")
    with urllib.request.urlopen(request) as response:
        return response.headers["ETag"]


def put_parts(upload: dict, content: bytes) -> list[dict]:
    """Every part of a started upload sent to S3: the ``parts`` body that completes it."""
    size = upload["part_size"]
    return [
        {
            "part_number": part["part_number"],
            "etag": put_part(part["url"], content[(part["part_number"] - 1) * size :][:size]),
        }
        for part in upload["parts"]
    ]
