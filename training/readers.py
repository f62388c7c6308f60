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


def read_csv(stream: IO[bytes]) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    text = _text(stream)
    reader = csv.reader(text)
    try:
        header = next(reader, None)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetFormatError("bad_encoding", f"The header cannot be read: {exc}.") from None
    if header is None:
        raise DatasetFormatError("empty_file", "The file is empty.")
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


def read_parquet(stream: IO[bytes]) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(KeepOpen(stream))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DatasetFormatError("corrupt_parquet", f"The Parquet file cannot be read: {exc}.") from None
    columns = check_raw_names(parquet.schema_arrow.names)

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        line = 0
        try:
            for batch in parquet.iter_batches(batch_size=4096):
                for row in batch.to_pylist():
                    line += 1
                    yield line, row
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise DatasetFormatError("corrupt_parquet", f"Row group after row {line} is unreadable: {exc}.") from None

    return columns, rows()


READERS = {"csv": read_csv, "jsonl": read_jsonl, "parquet": read_parquet}


def open_rows(fmt: str, stream: IO[bytes]) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    if fmt not in READERS:
        raise DatasetFormatError("unknown_format", f"Unknown format {fmt!r}; use csv, parquet or jsonl.")
    return READERS[fmt](stream)
