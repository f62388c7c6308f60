"""PII columns are replaced by a keyed hash or dropped before anything reaches object storage.

The hash key is derived per tenant from ``PII_HASH_KEY`` (a deployment
secret) and the tenant id, so it is never stored with a dataset, equal values
stay joinable within a tenant, and two tenants' hashes of the same value differ.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
from typing import IO, Any

from django.conf import settings

from datasets.readers import DatasetFormatError, open_rows

HASH_PREFIX = "pii_"


def tenant_pii_key(tenant_id) -> bytes:
    return hmac.new(settings.PII_HASH_KEY.encode(), f"pii:{tenant_id}".encode(), hashlib.sha256).digest()


def keyed_hash(key: bytes, value: Any) -> str | None:
    if value is None or value == "":
        return None
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return HASH_PREFIX + hmac.new(key, text.encode(), hashlib.sha256).hexdigest()[:32]


def rewrite(fmt: str, source: IO[bytes], sink: IO[bytes], *, pii_columns: set[str], mode: str, key: bytes) -> None:
    """Stream ``source`` to ``sink`` in the same format with PII columns hashed or dropped."""
    columns, rows = open_rows(fmt, source)
    kept = [c for c in columns if not (mode == "drop" and c in pii_columns)]

    def transform(row: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name in kept:
            value = row.get(name)
            out[name] = keyed_hash(key, value) if name in pii_columns else value
        return out

    if fmt == "csv":
        text = io.TextIOWrapper(sink, encoding="utf-8", newline="", write_through=False)
        writer = csv.writer(text)
        writer.writerow(kept)
        for _, row in rows:
            writer.writerow(["" if v is None else v for v in transform(row).values()])
        text.flush()
        text.detach()
    elif fmt == "jsonl":
        for _, row in rows:
            sink.write(json.dumps(transform(row), ensure_ascii=False).encode() + b"\n")
    else:
        _rewrite_parquet(rows, sink, kept=kept, pii_columns=pii_columns, transform=transform)


def _rewrite_parquet(rows, sink, *, kept, pii_columns, transform, batch_rows: int = 8192) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal writer
        table = pa.Table.from_pylist(batch)
        if writer is None:
            fields = [pa.field(n, pa.string()) if n in pii_columns else table.schema.field(n) for n in kept]
            writer = pq.ParquetWriter(sink, pa.schema(fields))
        writer.write_table(table.cast(writer.schema))
        batch.clear()

    for _, row in rows:
        batch.append(transform(row))
        if len(batch) >= batch_rows:
            flush()
    if batch:
        flush()
    if writer is None:
        raise DatasetFormatError("header_only", "The file has a header but no rows.")
    writer.close()
