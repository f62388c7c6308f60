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

DISTINCT_CAP = 50_000
VOCAB_CAP = 2_000_000
LABEL_CLASSES_CAP = 1_000
TOP_VALUES = 10
_INT = re.compile(r"^[+-]?\d{1,18}$")  # longer digit strings are identifiers, kept as strings
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_SEQUENCE = re.compile(r"^\d+( +\d+)+$")
_BOOL = {"true": True, "false": False}
_WHITESPACE = re.compile(r"\s")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


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


def _uniform_kind(texts: list[str]) -> tuple[str | None, list]:
    """(kind, parsed values) when every string in the batch is of one simple kind, else (None, [])."""
    texts = [t.strip() for t in texts]
    if all(_INT.match(t) for t in texts):
        return "integer", [int(t) for t in texts]
    try:
        numbers = [float(t) for t in texts]
    except ValueError:
        numbers = None
    if numbers is not None and all(_FLOAT.match(t.strip()) for t in texts) and all(map(math.isfinite, numbers)):
        return "float", numbers
    lowered = {t.strip().lower() for t in texts}
    if lowered <= set(_BOOL):
        return "boolean", [_BOOL[t.strip().lower()] for t in texts]
    if _all_id_sequences(texts):
        return "sequence", []
    # Anything else makes the column string or text, whatever a few values look like.
    return "string", []


def _all_id_sequences(texts: list[str]) -> bool:
    """Every text is ASCII digits separated by single spaces (whole-batch string operations)."""
    joined = " ".join(texts)
    digits = joined.replace(" ", "")
    if not (digits.isascii() and digits.isdigit()) or "  " in joined:
        return False
    if max(map(len, set(joined.split()))) > 18:  # ids this long are not vocabulary indices
        return False
    return all(t[0] != " " and t[-1] != " " for t in texts)


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

    def add_many(self, lengths: Iterable[int]) -> None:
        self.counts.update(lengths)

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
                self.whitespace += any(c.isspace() for c in text.strip())
                self.cjk += bool(_CJK.search(text))
            self._count_value(text)

    def add_batch(self, values: list[Any]) -> None:
        """Profile many values at once: whole-batch conversions run at C speed.

        CSV values are strings; when a batch is uniformly integers, floats,
        booleans or id sequences it is handled in a few list operations, else
        value by value.
        """
        present = [v for v in values if v is not None and v != ""]
        if not present or not all(isinstance(v, str) for v in present) or not self._add_uniform(present):
            for value in values:
                self.add(value)
            return
        self.count += len(values)
        self.nulls += len(values) - len(present)

    def _add_uniform(self, present: list[str]) -> bool:
        kind, parsed = _uniform_kind(present)
        if kind is None:
            return False
        self.kinds[kind] += len(present)
        if kind in {"integer", "float"}:
            self.numeric += len(parsed)
            self.total += sum(parsed)
            low, high = min(parsed), max(parsed)
            self.minimum = low if self.minimum is None else min(self.minimum, low)
            self.maximum = high if self.maximum is None else max(self.maximum, high)
        elif kind == "boolean":
            self.true_count += sum(parsed)
        if kind == "sequence":
            self.lengths.add_many(text.count(" ") + 1 for text in present)
            tokens = set(" ".join(present).split())
            self.max_id = max(self.max_id, max(map(int, tokens)))
            if not self.vocab_overflow:
                self.vocabulary.update(map(int, tokens))
                if len(self.vocabulary) > VOCAB_CAP:
                    self.vocab_overflow = True
                    self.vocabulary.clear()
        elif kind == "string":
            self.lengths.add_many(map(len, present))
            self.whitespace += sum(1 for t in present if _WHITESPACE.search(t.strip()))
            self.cjk += sum(1 for t in present if _CJK.search(t))
        if kind not in {"float", "sequence"}:
            self._count_values(present)
        return True

    def _count_values(self, texts: list[str]) -> None:
        if len(self.values) + len(texts) <= DISTINCT_CAP:
            self.values.update(texts)
            return
        for text in texts:
            self._count_value(text)

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
            result |= {
                "length": self.lengths.summary(),
                "max_id": self.max_id,
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


class DatasetProfile:
    """The whole file's profile: feed rows, then read schema, stats and label distribution."""

    def __init__(self, columns: list[str], *, label_column: str = "") -> None:
        self.columns = {name: ColumnProfile(name) for name in columns}
        self.label_column = label_column
        self.labels: Counter[str] = Counter()
        self.label_overflow = False
        self.rows = 0

    def add(self, row: dict[str, Any]) -> None:
        self.rows += 1
        for name, column in self.columns.items():
            column.add(row.get(name))
        if self.label_column:
            value = row.get(self.label_column)
            if value is not None and value != "":
                self._count_labels([str(value)])

    def add_all(self, rows: Iterable[tuple[int, dict[str, Any]]], *, batch_rows: int = 4096) -> None:
        batch: list[dict[str, Any]] = []
        for _, row in rows:
            batch.append(row)
            if len(batch) == batch_rows:
                self.add_batch(batch)
                batch = []
        if batch:
            self.add_batch(batch)

    def add_batch(self, rows: list[dict[str, Any]]) -> None:
        self.rows += len(rows)
        for name, column in self.columns.items():
            column.add_batch([row.get(name) for row in rows])
        if self.label_column:
            self._count_labels(str(v) for row in rows if (v := row.get(self.label_column)) is not None and v != "")

    def _count_labels(self, labels: Iterable[str]) -> None:
        for key in labels:
            if key in self.labels or len(self.labels) < LABEL_CLASSES_CAP:
                self.labels[key] += 1
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
