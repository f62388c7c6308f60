"""Dataset files as Arrow record batches: what validation profiles and writes the canonical copy from.

The row readers (``datasets.readers``) stay the reference for what a file means and how a broken one is named;
this module reads the same files at columnar speed and agrees with them:

- CSV is parsed by Arrow's C++ reader, every column as strings (empty fields null), exactly the values the row
  reader yields. If Arrow refuses the file, or a field is over the row reader's limit, the file is read again by
  the row reader, which raises the problem with its machine-readable code and line number; a file only Arrow
  refuses is ``malformed_csv``. Broken files pay for two reads, good files for one.
- JSON lines are parsed by the row reader (its checks: one object per line, no NaN, no new keys) and assembled
  into string columns in the text form the profiler reads (``12``, ``true``, ``1.5``, ids as ``"3 8 1"``, other
  values as JSON), so a JSON file and the CSV of the same values profile alike.
- Parquet batches come from the row reader's guarded decoder (footer checked first, each batch's decoded size
  bounded), with dictionary-encoded columns decoded, in the file's own types.

Every reader holds one batch at a time: memory does not grow with the file.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from datasets import readers
from datasets.readers import DatasetFormatError

CSV_BLOCK_BYTES = 4 * 1024 * 1024  # one Arrow batch per block; a row may span at most one block boundary
JSONL_BATCH_ROWS = 8192


def open_batches(fmt: str, stream: IO[bytes]) -> tuple[list[str], Iterator[pa.RecordBatch]]:
    """(columns, record batches) of a file; ``stream`` must be seekable (a broken CSV is read twice)."""
    if fmt == "csv":
        return _csv_batches(stream)
    if fmt == "jsonl":
        columns, rows = readers.read_jsonl(stream)
        return columns, _jsonl_batches(columns, rows)
    if fmt == "parquet":
        return readers.read_parquet_batches(stream)
    raise DatasetFormatError("unknown_format", f"Unknown format {fmt!r}; use csv, parquet or jsonl.")


# --- CSV ---------------------------------------------------------------------------------------


def _csv_batches(stream: IO[bytes]) -> tuple[list[str], Iterator[pa.RecordBatch]]:
    start = stream.tell()
    header = readers.read_csv_header(stream)  # the row reader's header checks and codes
    columns = readers.check_columns(header)
    stream.seek(start)
    source = readers.KeepOpen(stream, max_line=readers.MAX_LINE_BYTES)
    try:
        reader = pa_csv.open_csv(
            source,
            read_options=pa_csv.ReadOptions(use_threads=False, block_size=CSV_BLOCK_BYTES),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
    except DatasetFormatError:
        raise
    except (pa.ArrowException, ValueError) as exc:
        _diagnose_csv(stream, start, exc)
    if reader.schema.names != header:
        _diagnose_csv(stream, start, ValueError("Arrow read a different header"))

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for batch in reader:
                if len(batch) == 0:
                    continue
                longest = max((pc.max(pc.binary_length(c)).as_py() or 0) for c in batch.columns)
                if longest > readers.MAX_FIELD_BYTES:
                    raise ValueError(f"a field is over {readers.MAX_FIELD_BYTES} bytes")
                yield pa.RecordBatch.from_arrays(batch.columns, names=columns)
        except DatasetFormatError:
            raise
        except (pa.ArrowException, ValueError) as exc:
            _diagnose_csv(stream, start, exc)

    return columns, batches()


def _diagnose_csv(stream: IO[bytes], start: int, exc: Exception) -> None:
    """Name what is wrong with a CSV file Arrow refused, in the row reader's words (always raises)."""
    stream.seek(start)
    _, rows = readers.read_csv(stream)
    for _ in rows:  # raises the row reader's DatasetFormatError where the file breaks
        pass
    raise DatasetFormatError("malformed_csv", f"The CSV file cannot be parsed: {exc}.") from None


# --- JSON lines ---------------------------------------------------------------------------------


def as_profiled_text(value: Any) -> str | None:
    """One JSON value as the text a CSV cell holding it would have (what the profiler and the trainer read)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return " ".join(map(str, value))
    return json.dumps(value, ensure_ascii=False)


def _jsonl_batches(columns: list[str], rows: Iterator[tuple[int, dict[str, Any]]]) -> Iterator[pa.RecordBatch]:
    cells: dict[str, list[str | None]] = {name: [] for name in columns}
    count = 0
    for _, row in rows:
        for name in columns:
            cells[name].append(as_profiled_text(row.get(name)))
        count += 1
        if count == JSONL_BATCH_ROWS:
            yield _string_batch(cells)
            cells, count = {name: [] for name in columns}, 0
    if count:
        yield _string_batch(cells)


def _string_batch(cells: dict[str, list[str | None]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array(values, type=pa.string()) for values in cells.values()], names=list(cells)
    )


def read_all_batches(fmt: str, data: bytes) -> tuple[list[str], list[pa.RecordBatch]]:
    """Every batch of an in-memory file (tests and small tools)."""
    columns, batches = open_batches(fmt, io.BytesIO(data))
    return columns, list(batches)
