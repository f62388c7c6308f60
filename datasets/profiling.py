"""Schema inference and per-column statistics in one streaming pass, with bounded memory.

Column types: integer, float, boolean, string, text, and id_sequence (space
separated integer ids such as ``"12 85 3 9"``, the seed model's input).
Counters stop growing at fixed caps; counts past a cap are flagged ``approximate``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DISTINCT_CAP = 50_000
VOCAB_CAP = 2_000_000
LABEL_CLASSES_CAP = 1_000
TOP_VALUES = 10
# One set of patterns for the value-by-value path (Python's re, ASCII classes) and the columnar one (RE2 in Arrow).
INT_PATTERN = r"^[+-]?\d{1,18}$"  # longer digit strings are identifiers, kept as strings
FLOAT_PATTERN = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
SEQUENCE_PATTERN = r"^\d{1,18}( +\d{1,18})+$"  # ids this long are not vocabulary indices
BOOL_PATTERN = r"^(?i:true|false)$"
WHITESPACE_PATTERN = r"[\t\n\f\r ]"
CJK_RANGES = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7AF))
_INT = re.compile(INT_PATTERN, re.ASCII)
_FLOAT = re.compile(FLOAT_PATTERN, re.ASCII)
_SEQUENCE = re.compile(SEQUENCE_PATTERN, re.ASCII)
_BOOL = {"true": True, "false": False}
_WHITESPACE = re.compile(WHITESPACE_PATTERN)
_CJK = re.compile("[" + "".join(f"{chr(a)}-{chr(b)}" for a, b in CJK_RANGES) + "]")
_CJK_RE2 = "[" + "".join(f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in CJK_RANGES) + "]"


def classify(value: Any) -> tuple[str, Any]:
    """The kind of one raw value (null, boolean, integer, float, sequence, string) and its parsed form."""
    if value is None:
        return "null", None
    if isinstance(value, bool):
        return "boolean", value
    if isinstance(value, int):
        return ("integer", value) if abs(value) < 10**18 else ("string", str(value))
    if isinstance(value, float):
        return ("float", value) if math.isfinite(value) else ("null", None)
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return "sequence", value
    if not isinstance(value, str):
        return "string", str(value)
    text = value.strip()
    if text == "":
        return "null", None
    lowered = text.lower()
    if lowered in _BOOL:
        return "boolean", _BOOL[lowered]
    if _INT.match(text):
        return "integer", int(text)
    if _FLOAT.match(text):
        number = float(text)
        return ("float", number) if math.isfinite(number) else ("string", value)
    if _SEQUENCE.match(text):
        return "sequence", [int(t) for t in text.split()]
    return "string", value


def _parse_ids(texts: pa.Array) -> np.ndarray:
    """Every id of some id-sequence texts (digits and spaces only, checked by SEQUENCE_PATTERN), in order.

    The texts are joined with spaces and parsed by NumPy's C number reader in one call: splitting them into
    millions of small Arrow strings first costs several times more.
    """
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(texts)], pa.int32()), texts), " ")[0]
    return np.fromstring(joined.as_buffer().to_pybytes(), dtype=np.int64, sep=" ")


def _has_edge_spaces(texts: pa.Array) -> bool:
    """Some text starts or ends with white space (trimming is skipped when none does: it copies every value)."""
    edges = (pc.utf8_slice_codeunits(texts, 0, 1), pc.utf8_slice_codeunits(texts, -1, None))
    return any(pc.any(pc.utf8_is_space(edge)).as_py() for edge in edges)


def _all_below(array: pa.Array, bound: int) -> bool:
    """Every value's magnitude is below ``bound`` (beyond it an integer is an identifier, profiled as a string)."""
    bounds = pc.min_max(array).as_py()
    return bounds["min"] is None or (abs(bounds["min"]) < bound and abs(bounds["max"]) < bound)


def json_safe(value: Any) -> Any:
    """A value as JSON can carry it: no NaN/Infinity, bytes as text, other objects as strings.

    Used for statistics (an overflowing mean) and for preview cells (Parquet and JSON values).
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


class LengthHistogram:
    """Exact counts per length (lengths repeat a lot), giving min/max/mean/percentiles."""

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()

    def add(self, length: int) -> None:
        self.counts[length] += 1

    def add_counts(self, counted: pa.StructArray) -> None:
        """Merge a ``value_counts`` of lengths."""
        lengths, counts = counted.field("values").to_pylist(), counted.field("counts").to_pylist()
        self.counts.update(dict(zip(lengths, counts, strict=True)))

    def summary(self) -> dict[str, float] | None:
        total = sum(self.counts.values())
        if not total:
            return None
        ordered = sorted(self.counts.items())

        def percentile(p: float) -> int:
            target, seen = p * total, 0
            for length, count in ordered:
                seen += count
                if seen >= target:
                    return length
            return ordered[-1][0]

        mean = sum(length * count for length, count in ordered) / total
        return {
            "min": ordered[0][0],
            "max": ordered[-1][0],
            "mean": round(mean, 3),
            "p50": percentile(0.5),
            "p95": percentile(0.95),
        }


class ColumnProfile:
    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.nulls = 0
        self.kinds: Counter[str] = Counter()
        self.minimum: float | None = None
        self.maximum: float | None = None
        self.total = 0.0
        self.numeric = 0
        self.true_count = 0
        self.values: Counter[str] = Counter()
        self.distinct_overflow = False
        self.lengths = LengthHistogram()
        self.whitespace = 0
        self.cjk = 0
        self.vocabulary: set[int] = set()
        self.vocab_overflow = False
        self.max_id = 0

    def add(self, raw: Any) -> None:
        self.count += 1
        kind, value = classify(raw)
        if kind == "null":
            self.nulls += 1
            return
        self.kinds[kind] += 1
        if kind in {"integer", "float"}:
            self.numeric += 1
            self.total += value
            self.minimum = value if self.minimum is None else min(self.minimum, value)
            self.maximum = value if self.maximum is None else max(self.maximum, value)
        elif kind == "boolean":
            self.true_count += int(value)
        elif kind == "sequence":
            self.lengths.add(len(value))
            self.max_id = max(self.max_id, max(value))
            if not self.vocab_overflow:
                self.vocabulary.update(value)
                if len(self.vocabulary) > VOCAB_CAP:
                    self.vocab_overflow = True
                    self.vocabulary.clear()
        if kind not in {"float", "sequence"}:  # distinct values are reported for discrete columns only
            text = raw if isinstance(raw, str) else str(raw)
            if kind == "string":
                self.lengths.add(len(text))
                self.whitespace += bool(_WHITESPACE.search(text.strip()))
                self.cjk += bool(_CJK.search(text))
            self._count_value(text)

    def add_array(self, array: pa.Array) -> None:
        """Profile one column of a record batch with Arrow's kernels; the result equals ``add`` per value.

        Strings (CSV, JSON lines) are classified by the same patterns as ``classify``; Parquet's integer and
        floating columns are read as numbers; other types (lists, booleans, timestamps) value by value.
        """
        kind = array.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            self._add_strings(array)
        elif pa.types.is_null(kind):
            self.count += len(array)
            self.nulls += len(array)
        elif pa.types.is_integer(kind) and _all_below(array, 10**18):
            self._add_numbers(array, "integer")
        elif pa.types.is_floating(kind):
            self._add_numbers(pc.if_else(pc.is_finite(array), array, None), "float")
        else:
            for value in array.to_pylist():
                self.add(value)

    def _add_numbers(self, array: pa.Array, kind: str) -> None:
        self.count += len(array)
        present = len(array) - array.null_count
        self.nulls += len(array) - present
        if not present:
            return
        self.kinds[kind] += present
        self._add_numeric(array, present)
        if kind == "integer":
            self._count_values(pc.value_counts(array.drop_null()), text=str)

    def _add_numeric(self, numbers: pa.Array, count: int) -> None:
        self.numeric += count
        self.total += pc.sum(numbers.cast(pa.float64())).as_py() or 0.0
        bounds = pc.min_max(numbers).as_py()
        low, high = bounds["min"], bounds["max"]
        self.minimum = low if self.minimum is None else min(self.minimum, low)
        self.maximum = high if self.maximum is None else max(self.maximum, high)

    def _add_strings(self, raw: pa.Array) -> None:
        self.count += len(raw)
        trimmed = pc.utf8_trim_whitespace(raw) if _has_edge_spaces(raw) else raw
        present = pc.fill_null(pc.not_equal(trimmed, ""), False)
        raw, text = raw.filter(present), trimmed.filter(present)
        self.nulls += len(present) - len(raw)
        if not len(text):
            return
        is_int = pc.match_substring_regex(text, INT_PATTERN)
        is_bool = pc.match_substring_regex(text, BOOL_PATTERN)
        is_sequence = pc.match_substring_regex(text, SEQUENCE_PATTERN)
        is_float = pc.and_(pc.match_substring_regex(text, FLOAT_PATTERN), pc.invert(is_int))
        discrete = pc.invert(pc.or_(is_float, is_sequence))  # distinct values are counted for these
        strings = pc.invert(pc.or_(pc.or_(is_int, is_bool), pc.or_(is_float, is_sequence)))
        if pc.any(is_int).as_py():
            ints = pc.utf8_ltrim(text.filter(is_int), characters="+").cast(pa.int64())
            self.kinds["integer"] += len(ints)
            self._add_numeric(ints, len(ints))
        if pc.any(is_bool).as_py():
            bools = text.filter(is_bool)
            self.kinds["boolean"] += len(bools)
            self.true_count += pc.sum(pc.match_substring_regex(bools, "^(?i:true)$")).as_py() or 0
        if pc.any(is_float).as_py():
            floats = text.filter(is_float).cast(pa.float64())
            finite = pc.is_finite(floats)
            floats = floats.filter(finite)
            if len(floats):
                self.kinds["float"] += len(floats)
                self._add_numeric(floats, len(floats))
            if len(floats) < len(finite):  # 1e999: not a number anyone can use, kept as the text it is
                overflow = pc.replace_with_mask(is_float, is_float, pc.invert(finite))  # back to full length
                strings, discrete = pc.or_(strings, overflow), pc.or_(discrete, overflow)
        if pc.any(is_sequence).as_py():
            self._add_sequences(text.filter(is_sequence))
        if pc.any(strings).as_py():
            texts, kept = raw.filter(strings), text.filter(strings)
            self.kinds["string"] += len(texts)
            self.lengths.add_counts(pc.value_counts(pc.utf8_length(texts)))
            self.whitespace += pc.sum(pc.match_substring_regex(kept, WHITESPACE_PATTERN)).as_py() or 0
            self.cjk += pc.sum(pc.match_substring_regex(texts, _CJK_RE2)).as_py() or 0
        if pc.any(discrete).as_py():
            self._count_values(pc.value_counts(raw.filter(discrete)), text=None)

    def _add_sequences(self, texts: pa.Array) -> None:
        ids = _parse_ids(texts)
        self.kinds["sequence"] += len(texts)
        lengths = pc.add(pc.count_substring(texts, " "), 1)
        if pc.sum(lengths).as_py() != len(ids):  # some ids are separated by runs of spaces: count the runs
            lengths = pc.add(pc.count_substring_regex(texts, " +"), 1)
        self.lengths.add_counts(pc.value_counts(lengths))
        self.max_id = max(self.max_id, int(ids.max()))
        if not self.vocab_overflow:
            self.vocabulary.update(pc.unique(pa.array(ids)).to_pylist())
            if len(self.vocabulary) > VOCAB_CAP:
                self.vocab_overflow = True
                self.vocabulary.clear()

    def _count_values(self, counted: pa.StructArray, *, text) -> None:
        """Merge one batch's ``value_counts`` into the capped counter (keys as ``text`` makes them)."""
        values, counts = counted.field("values").to_pylist(), counted.field("counts").to_pylist()
        if text is not None:
            values = [text(v) for v in values]
        for value, count in zip(values, counts, strict=True):
            if value in self.values or len(self.values) < DISTINCT_CAP:
                self.values[value] += count
            else:
                self.distinct_overflow = True

    def _count_value(self, text: str) -> None:
        if text in self.values or len(self.values) < DISTINCT_CAP:
            self.values[text] += 1
        else:
            self.distinct_overflow = True

    def dtype(self) -> str:
        kinds = set(self.kinds)
        if not kinds:
            return "string"
        if kinds == {"boolean"}:
            return "boolean"
        if kinds == {"integer"}:
            return "integer"
        if kinds <= {"integer", "float"}:
            return "float"
        if "sequence" in kinds and kinds <= {"sequence", "integer"}:
            return "id_sequence"
        strings = self.kinds["string"] or 1
        summary = self.lengths.summary() or {"mean": 0}
        if (
            self.whitespace / strings >= 0.5
            or summary["mean"] >= 24
            or (self.cjk / strings >= 0.5 and summary["mean"] >= 6)
        ):
            return "text"
        return "string"

    def schema(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.dtype(), "nullable": self.nulls > 0}

    def stats(self) -> dict[str, Any]:
        return json_safe(self._stats())

    def _stats(self) -> dict[str, Any]:
        dtype = self.dtype()
        result: dict[str, Any] = {"type": dtype, "count": self.count, "nulls": self.nulls}
        if dtype in {"integer", "float"}:
            result |= {
                "min": self.minimum,
                "max": self.maximum,
                "mean": round(self.total / self.numeric, 6) if self.numeric else None,
            }
        elif dtype == "boolean":
            result |= {"true": self.true_count, "false": self.count - self.nulls - self.true_count}
        elif dtype == "id_sequence":
            # A single id reads as an integer; in a sequence column it is a sequence of one.
            lengths = LengthHistogram()
            lengths.counts = self.lengths.counts + Counter({1: self.kinds["integer"]})
            result |= {
                "length": lengths.summary(),
                "max_id": max(self.max_id, int(self.maximum or 0)),
                "vocabulary_size": None if self.vocab_overflow else len(self.vocabulary),
                "vocabulary_approximate": self.vocab_overflow,
            }
        else:
            result["length"] = self.lengths.summary()
        if dtype in {"string", "text", "integer", "boolean"}:
            result |= {
                "distinct": len(self.values),
                "distinct_approximate": self.distinct_overflow,
                "top_values": [[v, c] for v, c in self.values.most_common(TOP_VALUES)],
            }
        return result


def _label_counts(array: pa.Array) -> dict[str, int]:
    """Label -> rows, keyed as ``str`` of the value (empty and missing labels are not labels)."""
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        return Counter(str(v) for v in array.to_pylist() if v is not None and v != "")
    counted = pc.value_counts(array.filter(pc.fill_null(pc.not_equal(array, ""), False)))
    return dict(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True))


class DatasetProfile:
    """The whole file's profile: feed rows, then read schema, stats and label distribution."""

    def __init__(self, columns: list[str], *, label_column: str = "") -> None:
        self.columns = {name: ColumnProfile(name) for name in columns}
        self.label_column = label_column
        self.labels: Counter[str] = Counter()
        self.label_overflow = False
        self.rows = 0

    def add(self, row: dict[str, Any]) -> None:
        """One row, value by value (the reference the columnar path is tested against)."""
        self.rows += 1
        for name, column in self.columns.items():
            column.add(row.get(name))
        if self.label_column:
            value = row.get(self.label_column)
            if value is not None and value != "":
                self._count_labels({str(value): 1})

    def add_all(self, batches: Iterable[pa.RecordBatch]) -> None:
        for batch in batches:
            self.add_batch(batch)

    def add_batch(self, batch: pa.RecordBatch) -> None:
        self.rows += len(batch)
        for name, column in self.columns.items():
            column.add_array(batch.column(name))
        if self.label_column:
            self._count_labels(_label_counts(batch.column(self.label_column)))

    def _count_labels(self, labels: dict[str, int]) -> None:
        for key, count in labels.items():
            if key in self.labels or len(self.labels) < LABEL_CLASSES_CAP:
                self.labels[key] += count
            else:
                self.label_overflow = True

    def schema(self) -> list[dict[str, Any]]:
        return [column.schema() for column in self.columns.values()]

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "rows": self.rows,
            "columns": {name: column.stats() for name, column in self.columns.items()},
        }
        if self.label_column:
            stats["label_distribution"] = dict(self.labels.most_common())
            stats["label_classes_approximate"] = self.label_overflow
        return stats
