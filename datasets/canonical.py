"""The canonical training copy: a ready dataset written once more as Parquet, beside the original.

Validation writes it in the same pass that profiles the file, from the same record batches, so it costs no extra
read. It holds what the original holds after PII columns were hashed or dropped (the stored original already is),
column for column: CSV and JSON lines as strings (the text the profile classified), Parquet in its own types.
Row groups are bounded in rows and bytes, so a reader streams it a row group at a time, and a preview reads the
footer and the first row group of a file of any size. Everything downstream (preview, training, evaluation) reads
this copy; the original stays the tenant's file, byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from core import storage

FILE_NAME = "canonical.parquet"
ROW_GROUP_ROWS = 65_536
ROW_GROUP_BYTES = 64 * 1024 * 1024  # Arrow bytes held before a row group is written
COMPRESSION = "zstd"


class CanonicalWriter:
    """Streams record batches into ``key`` as Parquet; ``finish`` returns (sha256, size), ``abort`` drops it."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._object = storage.ObjectWriter(key, content_type="application/vnd.apache.parquet")
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = self._pending_bytes = 0
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._object, batch.schema, compression=COMPRESSION)
        elif batch.schema != self._writer.schema:
            batch = batch.cast(self._writer.schema)
        self._pending.append(batch)
        self._pending_rows += len(batch)
        self._pending_bytes += batch.nbytes
        self.rows += len(batch)
        if self._pending_rows >= ROW_GROUP_ROWS or self._pending_bytes >= ROW_GROUP_BYTES:
            self._flush(whole_groups_only=self._pending_bytes < ROW_GROUP_BYTES)

    def tee(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Write each batch, then pass it on (to the profiler, in the same pass)."""
        for batch in batches:
            self.write(batch)
            yield batch

    def _flush(self, *, whole_groups_only: bool = False) -> None:
        """Write what is pending as row groups of ROW_GROUP_ROWS rows; with ``whole_groups_only`` the rows short
        of a whole group stay pending, so that every row group but the last (or one cut by bytes) is full."""
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending)
        count = (len(table) // ROW_GROUP_ROWS) * ROW_GROUP_ROWS if whole_groups_only else len(table)
        if count:
            self._writer.write_table(table.slice(0, count), row_group_size=ROW_GROUP_ROWS)
        rest = table.slice(count)
        self._pending = rest.to_batches() if len(rest) else []
        self._pending_rows = len(rest)
        self._pending_bytes = rest.nbytes if len(rest) else 0

    def finish(self) -> tuple[str, int]:
        if self._writer is None:
            raise ValueError("a canonical copy needs at least one batch")
        self._flush()
        self._writer.close()
        self._object.finish()
        return self._object.sha256, self._object.size

    def abort(self) -> None:
        self._pending = []
        self._object.abort()
