"""Reads of datasets. Every function takes the tenant or a row already scoped to it."""

from __future__ import annotations

from itertools import islice
from typing import Any

from django.db.models import Max, QuerySet

from core import storage
from core.errors import ServiceError
from datasets.models import Dataset
from datasets.profiling import json_safe
from datasets.readers import DatasetFormatError, open_rows, read_parquet_batches
from tenants.models import Tenant


def datasets_of(*, tenant: Tenant) -> QuerySet[Dataset]:
    return Dataset.objects.for_tenant(tenant)


def next_version(*, tenant: Tenant, name: str) -> int:
    latest = datasets_of(tenant=tenant).filter(name=name).aggregate(v=Max("version"))["v"]
    return (latest or 0) + 1


def duplicate_of(*, tenant: Tenant, sha256: str, exclude_id=None) -> Dataset | None:
    """An earlier dataset of the same tenant with identical content, if any."""
    same = datasets_of(tenant=tenant).filter(sha256=sha256).exclude(pk=exclude_id).exclude(status="invalid")
    return same.order_by("created_at").first()


# A preview shows what a dataset looks like, so its cells are abbreviated: 100 rows of 30 MiB texts must not
# become a multi-gigabyte response (the reader already bounds one row).
PREVIEW_CELL_CHARS = 2000
PREVIEW_CELL_ITEMS = 200


def _preview_cell(value: Any) -> Any:
    if isinstance(value, str | bytes) and len(value) > PREVIEW_CELL_CHARS:
        return value[:PREVIEW_CELL_CHARS] + ("…" if isinstance(value, str) else b"...")
    if isinstance(value, list) and len(value) > PREVIEW_CELL_ITEMS:
        return [_preview_cell(v) for v in value[:PREVIEW_CELL_ITEMS]] + ["…"]
    if isinstance(value, list):
        return [_preview_cell(v) for v in value]
    if isinstance(value, dict) and len(value) > PREVIEW_CELL_ITEMS:
        return {k: _preview_cell(v) for k, v in list(value.items())[:PREVIEW_CELL_ITEMS]}
    return value


def preview_rows(*, dataset: Dataset, rows: int) -> dict[str, Any]:
    """The first ``rows`` rows of a stored dataset, as stored (PII already hashed or dropped), long cells abbreviated.

    Read from the canonical copy when the dataset has one: its footer and the first row group, whatever the
    dataset's size. Older datasets are read from the start of the original. Either way through the guarded
    readers, so a stored object that would expand past the limits is refused with its code (422) instead of
    filling memory.
    """
    try:
        if dataset.canonical_key:
            with storage.open_reader(dataset.canonical_key, buffer_size=1024 * 1024) as stream:
                columns, batches = read_parquet_batches(stream, batch_rows=rows)
                records = list(islice((row for batch in batches for row in batch.to_pylist()), rows))
        else:
            with storage.open_reader(dataset.object_key, buffer_size=1024 * 1024) as stream:
                columns, numbered = open_rows(dataset.format, stream)
                records = [row for _, row in islice(numbered, rows)]
        first_rows = [{c: _preview_cell(row.get(c)) for c in columns} for row in records]
    except DatasetFormatError as exc:
        raise ServiceError(exc.message, code=exc.code, details=exc.details, status_code=422) from None
    return {"columns": columns, "rows": [[json_safe(row.get(c)) for c in columns] for row in first_rows]}
