"""Streaming readers for dataset files: CSV, JSON lines and Parquet.

Each reader takes a binary file object and yields ``(line_number, row)``
where ``row`` is a dict of column -> value, after checking the header.
Problems raise :class:`DatasetFormatError` with a machine-readable code and
a message a person can act on. Nothing here reads a whole file into memory.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator
from itertools import accumulate
from typing import IO, Any

MAX_COLUMNS = 1000
MAX_COLUMN_NAME = 200
MAX_FIELD_BYTES = 16 * 1024 * 1024
MAX_LINE_BYTES = 32 * 1024 * 1024
csv.field_size_limit(MAX_FIELD_BYTES)

PARQUET_MAGIC = b"PAR1"


class DatasetFormatError(Exception):
    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **({"details": self.details} if self.details else {})}


def detect_format(head: bytes, filename: str = "") -> str:
    """Guess csv, parquet or jsonl from the first bytes (and the file name as a tie-breaker)."""
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith(b"{"):
        return "jsonl"
    lowered = filename.lower()
    if lowered.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if lowered.endswith(".parquet"):
        return "parquet"
    return "csv"


def check_text_head(head: bytes) -> None:
    """Refuse binary content and bad UTF-8 early (on the first bytes only)."""
    if not head:
        raise DatasetFormatError("empty_file", "The file is empty.")
    if b"\x00" in head:
        raise DatasetFormatError("binary_file", "The file contains NUL bytes: it is not a text file.")
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        decoder.decode(head, final=False)
    except UnicodeDecodeError as exc:
        raise DatasetFormatError("bad_encoding", f"The file is not valid UTF-8 (byte {exc.start}).") from None


def check_columns(columns: list[str]) -> list[str]:
    if not columns:
        raise DatasetFormatError("no_columns", "The file has no columns.")
    if len(columns) > MAX_COLUMNS:
        raise DatasetFormatError(
            "too_many_columns", f"The file has {len(columns)} columns; the limit is {MAX_COLUMNS}.", limit=MAX_COLUMNS
        )
    cleaned = [str(c).strip() for c in columns]
    empty = [i for i, name in enumerate(cleaned) if not name]
    if empty:
        raise DatasetFormatError("empty_column_name", f"Column {empty[0] + 1} has no name.", positions=empty)
    long = [name for name in cleaned if len(name) > MAX_COLUMN_NAME]
    if long:
        raise DatasetFormatError("column_name_too_long", f"A column name is over {MAX_COLUMN_NAME} characters.")
    seen: set[str] = set()
    duplicates = sorted({name for name in cleaned if name in seen or seen.add(name)})
    if duplicates:
        raise DatasetFormatError(
            "duplicate_columns", f"Duplicate column names: {', '.join(duplicates)}.", columns=duplicates
        )
    return cleaned


class KeepOpen(io.BufferedIOBase):
    """A view of a binary stream that the readers may close without closing the caller's stream.

    With ``max_line`` it also refuses a line longer than that many bytes, so a
    file without line breaks cannot make a text reader buffer all of it.
    """

    def __init__(self, stream: IO[bytes], *, max_line: int | None = None) -> None:
        super().__init__()
        self._stream = stream
        self._max_line = max_line
        self._since_newline = 0

    def _checked(self, chunk: bytes) -> bytes:
        if self._max_line is not None and chunk:
            newline = chunk.rfind(b"\n")
            self._since_newline = len(chunk) - newline - 1 if newline >= 0 else self._since_newline + len(chunk)
            if self._since_newline > self._max_line:
                raise DatasetFormatError(
                    "line_too_long", f"A line is longer than {self._max_line} bytes.", limit=self._max_line
                )
        return chunk

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._stream.seekable()

    def read(self, size: int | None = -1) -> bytes:
        return self._checked(self._stream.read(-1 if size is None else size))

    def read1(self, size: int = -1) -> bytes:
        return self._checked(self._stream.read(size if size and size > 0 else io.DEFAULT_BUFFER_SIZE))

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._stream.seek(offset, whence)

    def tell(self) -> int:
        return self._stream.tell()


def _text(stream: IO[bytes]) -> io.TextIOWrapper:
    return io.TextIOWrapper(
        KeepOpen(stream, max_line=MAX_LINE_BYTES), encoding="utf-8-sig", errors="strict", newline=""
    )


def _header(reader) -> list[str]:
    try:
        header = next(reader, None)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetFormatError("bad_encoding", f"The header cannot be read: {exc}.") from None
    if header is None:
        raise DatasetFormatError("empty_file", "The file is empty.")
    return header


def read_csv_header(stream: IO[bytes]) -> list[str]:
    """The header row as written (names not yet stripped)."""
    return _header(csv.reader(_text(stream)))


def read_csv(stream: IO[bytes]) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    reader = csv.reader(_text(stream))
    header = _header(reader)
    columns = check_columns(header)

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        line = 1
        try:
            for record in reader:
                line = reader.line_num
                if not record:
                    continue
                if len(record) != len(columns):
                    raise DatasetFormatError(
                        "ragged_rows",
                        f"Line {line} has {len(record)} fields; the header has {len(columns)}.",
                        line=line,
                    )
                yield (
                    line,
                    {name: (value if value != "" else None) for name, value in zip(columns, record, strict=True)},
                )
        except UnicodeDecodeError:
            raise DatasetFormatError("bad_encoding", f"Invalid UTF-8 after line {line}.", line=line) from None
        except csv.Error as exc:
            raise DatasetFormatError("malformed_csv", f"Line {line}: {exc}.", line=line) from None

    return columns, rows()


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


def check_raw_names(columns: list[str]) -> list[str]:
    """Keyed formats (JSON lines, Parquet) keep names as they are: refuse ones that stripping would change."""
    cleaned = check_columns(columns)
    padded = [raw for raw, clean in zip(columns, cleaned, strict=True) if raw != clean]
    if padded:
        raise DatasetFormatError(
            "column_name_whitespace",
            f"Column names must not start or end with spaces: {padded[:5]!r}.",
            columns=padded[:50],
        )
    return cleaned


def read_jsonl(stream: IO[bytes]) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    """JSON lines: one object per line; columns are the first object's keys (later keys are refused)."""
    text = _text(stream)
    lines = enumerate(text, start=1)

    def parse(number: int, line: str) -> dict[str, Any] | None:
        if not line.strip():
            return None
        try:
            value = json.loads(line, parse_constant=_refuse_constant)
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(
                "malformed_json", f"Line {number} is not valid JSON: {exc.msg}.", line=number
            ) from None
        except (RecursionError, ValueError):
            raise DatasetFormatError(
                "malformed_json", f"Line {number} is nested too deeply or holds NaN/Infinity.", line=number
            ) from None
        if not isinstance(value, dict):
            raise DatasetFormatError("json_not_object", f"Line {number} is not a JSON object.", line=number)
        return value

    first, number = None, 0
    try:
        for number, line in lines:
            first = parse(number, line)
            if first is not None:
                break
    except UnicodeDecodeError:
        raise DatasetFormatError("bad_encoding", "The file is not valid UTF-8.") from None
    if first is None:
        raise DatasetFormatError("empty_file", "The file has no JSON objects.")
    columns = check_raw_names(list(first))
    known = set(columns)

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        yield number, first
        current = number
        try:
            for current, line in lines:
                value = parse(current, line)
                if value is None:
                    continue
                extra = set(value) - known
                if extra:
                    raise DatasetFormatError(
                        "ragged_rows",
                        f"Line {current} has keys the first object lacks: {', '.join(sorted(extra))}.",
                        line=current,
                    )
                yield current, value
        except UnicodeDecodeError:
            raise DatasetFormatError("bad_encoding", f"Invalid UTF-8 after line {current}.", line=current) from None

    return columns, rows()


# Parquet is compressed twice over: a codec (zstd, gzip, ...) inside each page, and dictionary/run-length encoding
# under it, so a 1 KiB file can declare gigabytes. The footer is checked before any page is decoded, string columns
# are read as dictionaries (an index per row, each distinct value once), and every batch's size as Python values is
# computed from those indices before a value is built: a file is refused by what it expands to, never by running
# out of memory while finding out.
PARQUET_BATCH_ROWS = 256
PARQUET_BATCH_BYTES = 16 * 1024 * 1024  # decoded bytes turned into Python values at once
RATIO_FLOOR_BYTES = 1024 * 1024  # below this, a file's compression ratio is not worth refusing
MAX_COLUMN_CHUNKS = 1_000_000  # row groups x columns: bounds the footer walk itself
_FIXED_WIDTH = {"BOOLEAN": 1, "INT32": 4, "INT64": 8, "INT96": 12, "FLOAT": 4, "DOUBLE": 8}


def decompression_limits() -> tuple[float, int, int]:
    """(max declared uncompressed/file ratio, max uncompressed or decoded bytes, max uncompressed row group)."""
    from django.conf import settings

    return (
        float(settings.DATASET_MAX_DECOMPRESSION_RATIO),
        settings.DATASET_MAX_UNCOMPRESSED_BYTES,
        settings.DATASET_MAX_ROW_GROUP_BYTES,
    )


def _too_large(decoded: int, limit: int) -> DatasetFormatError:
    return DatasetFormatError(
        "file_too_large_uncompressed",
        f"The file decodes to over {limit} bytes (at least {decoded}); the limit is {limit}.",
        limit=limit,
        declared=decoded,
    )


def check_parquet_metadata(metadata, *, file_size: int) -> None:
    """Refuse a Parquet file from its footer alone: declared sizes against a ratio of the file and caps.

    ``total_uncompressed_size`` is what the codec inflates to; a lower bound of what
    the values decode to is one fixed-width value (or a string offset) per value.
    Both are declared by the file's author, so the decode itself is guarded too.
    """
    max_ratio, max_bytes, max_row_group = decompression_limits()
    if metadata.num_row_groups * max(metadata.num_columns, 1) > MAX_COLUMN_CHUNKS:
        raise DatasetFormatError(
            "too_many_row_groups",
            f"The file has {metadata.num_row_groups} row groups of {metadata.num_columns} columns; "
            f"the limit is {MAX_COLUMN_CHUNKS} column chunks.",
            limit=MAX_COLUMN_CHUNKS,
        )
    uncompressed = decoded = 0
    largest_group, largest_index = 0, 0
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        group_bytes = 0
        for column in range(group.num_columns):
            chunk = group.column(column)
            size, values = chunk.total_uncompressed_size, chunk.num_values
            if size < 0 or values < 0 or chunk.total_compressed_size < 0:
                raise DatasetFormatError("corrupt_parquet", "The Parquet footer declares negative sizes.")
            group_bytes += size
            decoded += values * _FIXED_WIDTH.get(chunk.physical_type, 4)
        if group_bytes > largest_group:
            largest_group, largest_index = group_bytes, index
        uncompressed += group_bytes
    if uncompressed > RATIO_FLOOR_BYTES and uncompressed > max_ratio * max(file_size, 1):
        raise DatasetFormatError(
            "decompression_bomb",
            f"The file is {file_size} bytes but declares {uncompressed} bytes uncompressed "
            f"(over {max_ratio:g} times its size).",
            limit=max_ratio,
            declared=uncompressed,
            size=file_size,
        )
    if uncompressed > max_bytes or decoded > max_bytes:
        raise _too_large(max(uncompressed, decoded), max_bytes)
    if largest_group > max_row_group:
        raise DatasetFormatError(
            "row_group_too_large",
            f"Row group {largest_index} declares {largest_group} bytes uncompressed; the limit is {max_row_group}. "
            "Write the file with smaller row groups.",
            limit=max_row_group,
            declared=largest_group,
            row_group=largest_index,
        )


def _decoded_bytes(array) -> int:
    """What ``array`` takes once its dictionaries are expanded, computed without expanding them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_dictionary(kind):
        values = array.dictionary
        if len(array) == 0 or len(values) == 0:
            return 4 * len(array)
        if (
            pa.types.is_string(values.type)
            or pa.types.is_binary(values.type)
            or pa.types.is_large_string(values.type)
            or pa.types.is_large_binary(values.type)
        ):
            lengths = pc.binary_length(values).fill_null(0)
        else:
            lengths = pa.array([max(1, values.nbytes // len(values))] * len(values), pa.int64())
        total = pc.sum(pc.take(lengths.cast(pa.int64()), array.indices)).as_py() or 0
        return int(total) + 4 * len(array)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_map(kind):
        return _decoded_bytes(array.flatten()) + 8 * len(array)
    if pa.types.is_fixed_size_list(kind):
        return _decoded_bytes(array.flatten()) + len(array)
    if pa.types.is_struct(kind):
        return sum(_decoded_bytes(child) for child in array.flatten()) + len(array)
    return array.nbytes


def _guarded_batches(batch, counted: list[int], limit: int) -> Iterator[Any]:
    """``batch`` in slices of at most PARQUET_BATCH_BYTES decoded bytes, dictionaries decoded, counted to ``limit``."""
    size = sum(_decoded_bytes(column) for column in batch.columns)
    if len(batch) <= 1 or size <= PARQUET_BATCH_BYTES:
        if len(batch) == 1 and size > MAX_LINE_BYTES:
            raise DatasetFormatError(
                "row_too_large", f"A row decodes to {size} bytes; the limit is {MAX_LINE_BYTES}.", limit=MAX_LINE_BYTES
            )
        counted[0] += size
        if counted[0] > limit:
            raise _too_large(counted[0], limit)
        yield _decode_dictionaries(batch)
        return
    half = len(batch) // 2
    yield from _guarded_batches(batch.slice(0, half), counted, limit)
    yield from _guarded_batches(batch.slice(half), counted, limit)


def _decode_dictionaries(batch):
    import pyarrow as pa

    if not any(pa.types.is_dictionary(column.type) for column in batch.columns):
        return batch
    arrays = [column.dictionary_decode() if pa.types.is_dictionary(column.type) else column for column in batch.columns]
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def read_parquet_batches(
    stream: IO[bytes],
    *,
    batch_rows: int = 8192,
    columns: list[str] | None = None,
) -> tuple[list[str], Iterator[Any]]:
    """Parquet as Arrow record batches, checked from its footer before anything is decoded, then decoded in
    guarded slices (each at most PARQUET_BATCH_BYTES once expanded, the whole file at most the decoded limit).

    Returns (column names, iterator of record batches); ``columns`` reads only those.
    """
    names, numbered = read_parquet_numbered(stream, batch_rows=batch_rows, columns=columns)
    return names, (batch for _, batch in numbered)


def read_parquet_numbered(
    stream: IO[bytes],
    *,
    batch_rows: int = 8192,
    columns: list[str] | None = None,
    row_group_order=None,
) -> tuple[list[str], Iterator[tuple[int, Any]]]:
    """As :func:`read_parquet_batches`, with each batch's first row number in the file, reading the row groups
    in the order ``row_group_order(count)`` returns (file order without it), from one open file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = KeepOpen(stream)
    try:
        file_size = source.seek(0, io.SEEK_END)
        source.seek(0)
        metadata = pq.read_metadata(source)
        check_parquet_metadata(metadata, file_size=file_size)
        strings = [
            metadata.schema.column(i).path
            for i in range(metadata.num_columns)
            if metadata.schema.column(i).physical_type == "BYTE_ARRAY"
        ]
        source.seek(0)
        parquet = pq.ParquetFile(source, metadata=metadata, read_dictionary=strings)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DatasetFormatError("corrupt_parquet", f"The Parquet file cannot be read: {exc}.") from None
    names = check_raw_names(parquet.schema_arrow.names)
    _, limit, _ = decompression_limits()
    starts = list(accumulate((metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)), initial=0))
    # One group at a time in the given order (a row number per batch), or the whole file in one sweep.
    order = row_group_order(metadata.num_row_groups) if row_group_order else [None]

    def batches() -> Iterator[tuple[int, Any]]:
        read, counted = 0, [0]
        try:
            for group in order:
                row = 0 if group is None else starts[group]
                selected = None if group is None else [group]
                for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns, row_groups=selected):
                    for piece in _guarded_batches(batch, counted, limit):
                        yield row, piece
                        row += len(piece)
                        read += len(piece)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise DatasetFormatError("corrupt_parquet", f"Row group after row {read} is unreadable: {exc}.") from None

    return names, batches()


def read_parquet(stream: IO[bytes]) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    """Parquet rows as dicts, from the guarded batches (PARQUET_BATCH_ROWS rows turned into Python at a time)."""
    columns, batches = read_parquet_batches(stream, batch_rows=PARQUET_BATCH_ROWS)

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        line = 0
        for batch in batches:
            try:
                values = batch.to_pylist()
            except (ArithmeticError, ValueError) as exc:  # values Python cannot hold (a timestamp past year 9999)
                raise DatasetFormatError("corrupt_parquet", f"A value after row {line} is unreadable: {exc}.") from None
            for row in values:
                line += 1
                yield line, row

    return columns, rows()


READERS = {"csv": read_csv, "jsonl": read_jsonl, "parquet": read_parquet}


def open_rows(fmt: str, stream: IO[bytes]) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    if fmt not in READERS:
        raise DatasetFormatError("unknown_format", f"Unknown format {fmt!r}; use csv, parquet or jsonl.")
    return READERS[fmt](stream)
