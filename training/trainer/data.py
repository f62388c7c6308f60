"""Reading a job's dataset for training: streamed in record batches, split by row hash, shuffled in windows.

A job reads the dataset's canonical Parquet copy (``datasets.canonical``), only the columns it uses, one row
group at a time, so its memory does not grow with the dataset: what it holds is one shuffle window of rows, a
bounded sample of training rows (what preprocessing layers are adapted on) and the validation labels (one small
integer per validation row, for the evaluation). Datasets validated before the canonical copy existed are read
from their original file through the same batch readers.

- **Split.** A row belongs to the validation split when a hash of (seed, its row number) falls below
  ``validation_split``: the same rows every time, for any reader, without a permutation of the whole dataset.
- **Labels.** One pass over the label column alone finds the classes, counts the splits and keeps the
  validation labels; rows without a label are skipped.
- **Shuffle.** Each epoch visits the row groups in an order drawn from (seed, epoch) and permutes rows within
  windows of ``SHUFFLE_ROWS``, so an epoch's order is reproducible: a job resumed mid-epoch skips exactly the
  batches it had already trained on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core import storage
from datasets.batches import open_batches
from datasets.readers import read_parquet_numbered

ADAPT_ROWS = 100_000  # training rows kept in memory for adapting vocabularies and normalization
VALIDATION_SAMPLE_ROWS = 512  # validation rows kept for the compiled artifact's parity gate
SHUFFLE_ROWS = 65_536  # rows permuted together
READ_BATCH_ROWS = 8_192
MAX_CLASSES = 1_000


@dataclass(frozen=True)
class Source:
    """Where a job's rows come from: the canonical copy (Parquet, row groups) or an older dataset's original."""

    key: str
    fmt: str

    @contextmanager
    def batches(self, columns: list[str], *, shuffle: np.random.Generator | None = None):
        """(first row number, record batch of ``columns``) pairs from one open reader; with ``shuffle``, the
        canonical copy's row groups in an order drawn from it (an original is always read in file order)."""
        with storage.open_reader(self.key, buffer_size=4 * 1024 * 1024) as stream:
            if self.fmt == "parquet":
                order = (lambda count: [int(i) for i in shuffle.permutation(count)]) if shuffle else None
                _, numbered = read_parquet_numbered(
                    stream, batch_rows=READ_BATCH_ROWS, columns=columns, row_group_order=order
                )
                yield numbered
            else:
                _, batches = open_batches(self.fmt, stream)
                yield _numbered(batch.select(columns) for batch in batches)


def _numbered(batches: Iterator[pa.RecordBatch]) -> Iterator[tuple[int, pa.RecordBatch]]:
    row = 0
    for batch in batches:
        yield row, batch
        row += len(batch)


def row_hashes(*, seed: int, first_row: int, rows: int) -> np.ndarray:
    """A number in [0, 1) per row ``first_row ..``, from splitmix64 of the seed and the row number."""
    with np.errstate(over="ignore"):
        z = np.arange(first_row, first_row + rows, dtype=np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53)


def label_keys(array: pa.Array) -> pa.Array:
    """Labels as the class names the model reports: trimmed text, true/false as 1/0; null where there is none."""
    if pa.types.is_boolean(array.type):
        return pc.if_else(array, "1", "0")
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        return pa.array([None if v is None or v == "" else str(v) for v in array.to_pylist()], pa.string())
    text = pc.utf8_trim_whitespace(array)
    lowered = pc.utf8_lower(text)
    text = pc.if_else(pc.equal(lowered, "true"), "1", pc.if_else(pc.equal(lowered, "false"), "0", text))
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)


def _sort_key(name: str):
    return (len(name), name) if name.lstrip("-").isdigit() else (10**9, name)


def feature_values(array: pa.Array, column_type: str) -> np.ndarray:
    """One column as the model takes it: float32 (NaN for missing) for numbers and booleans, else strings."""
    if column_type in {"integer", "float"}:
        if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
            text = pc.utf8_ltrim(pc.utf8_trim_whitespace(array), characters="+")
            array = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text).cast(pa.float64())
        return array.cast(pa.float32()).to_numpy(zero_copy_only=False).astype("float32")
    if column_type == "boolean":
        text = pc.utf8_lower(pc.utf8_trim_whitespace(array.cast(pa.string())))
        return (
            pc.fill_null(pc.is_in(text, pa.array(["true", "1"])), False)
            .to_numpy(zero_copy_only=False)
            .astype("float32")
        )
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):  # Parquet id sequences
        array = pc.binary_join(pc.cast(array, pa.list_(pa.string())), " ")
    elif not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        array = pa.array([None if v is None else str(v) for v in array.to_pylist()], pa.string())
    return pc.fill_null(array, "").to_numpy(zero_copy_only=False)


@dataclass
class Rows:
    """Some rows of one split: feature column -> values, and label class indices."""

    features: dict[str, np.ndarray]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index) -> Rows:
        return Rows({name: values[index] for name, values in self.features.items()}, self.labels[index])

    @staticmethod
    def concat(parts: list[Rows], names: list[str]) -> Rows:
        if not parts:
            return Rows({name: np.array([]) for name in names}, np.array([], dtype="int64"))
        return Rows(
            {name: np.concatenate([p.features[name] for p in parts]) for name in names},
            np.concatenate([p.labels for p in parts]),
        )


@dataclass
class TrainingData:
    source: Source
    feature_columns: list[str]
    column_types: dict[str, str]
    label_column: str
    seed: int
    threshold: float  # rows whose hash is below it are validation rows
    label_names: list[str]
    train_rows: int
    val_labels: np.ndarray  # class index of every validation row, in file order
    train_sample: Rows  # the first ADAPT_ROWS training rows
    val_sample: Rows  # the first VALIDATION_SAMPLE_ROWS validation rows

    @property
    def val_rows(self) -> int:
        return len(self.val_labels)

    def rows(self, *, validation: bool, epoch: int = 0, shuffle: bool = False) -> Iterator[Rows]:
        """The split's rows in record-batch chunks: file order, or (``shuffle``) the epoch's reproducible order."""
        rng = np.random.default_rng([self.seed, epoch])
        chunks = self._chunks(validation=validation, shuffle=rng if shuffle else None)
        if not shuffle:
            yield from chunks
            return
        window: list[Rows] = []
        held = 0
        for chunk in chunks:
            window.append(chunk)
            held += len(chunk)
            if held >= SHUFFLE_ROWS:
                rows = Rows.concat(window, self.feature_columns)
                yield rows.take(rng.permutation(len(rows)))
                window, held = [], 0
        if window:
            rows = Rows.concat(window, self.feature_columns)
            yield rows.take(rng.permutation(len(rows)))

    def _chunks(self, *, validation: bool, shuffle: np.random.Generator | None):
        columns = [*self.feature_columns, self.label_column]
        names = pa.array(self.label_names, pa.string())
        with self.source.batches(columns, shuffle=shuffle) as batches:
            for first_row, batch in batches:
                keys = label_keys(batch.column(self.label_column))
                wanted = row_hashes(seed=self.seed, first_row=first_row, rows=len(batch)) < self.threshold
                if not validation:
                    wanted = ~wanted
                keep = pc.and_(pa.array(wanted), pc.is_valid(keys))
                batch, keys = batch.filter(keep), keys.filter(keep)
                if len(batch):
                    yield Rows(
                        {n: feature_values(batch.column(n), self.column_types[n]) for n in self.feature_columns},
                        pc.index_in(keys, value_set=names).to_numpy(zero_copy_only=False).astype("int64"),
                    )


def load(
    *,
    object_key: str,
    fmt: str,
    schema: list[dict],
    feature_columns: list[str],
    label_column: str,
    validation_split: float,
    seed: int,
) -> TrainingData:
    """Find the classes and the split's sizes in one pass over the label column, and keep the samples.

    The split takes the rows whose hash is below ``validation_split``; if that leaves no validation row (a
    tiny dataset), the labelled row with the smallest hash is the validation split.
    """
    types = {column["name"]: column["type"] for column in schema}
    source = Source(object_key, fmt)
    codes: dict[str, int] = {}
    val_codes: list[np.ndarray] = []
    labelled_rows = 0
    smallest = (2.0, -1)  # (hash, class) of the labelled row with the smallest hash
    with source.batches([label_column]) as batches:
        for first_row, batch in batches:
            keys = label_keys(batch.column(0))
            hashes = row_hashes(seed=seed, first_row=first_row, rows=len(batch))
            for name in pc.unique(keys.drop_null()).to_pylist():
                codes.setdefault(name, len(codes))
            if len(codes) > MAX_CLASSES:
                raise ValueError(f"the label column has over {MAX_CLASSES} classes")
            labelled = pc.is_valid(keys).to_numpy(zero_copy_only=False)
            if not labelled.any():
                continue
            classes = pc.index_in(keys, value_set=pa.array(list(codes), pa.string())).to_numpy(zero_copy_only=False)
            labelled_rows += int(np.count_nonzero(labelled))
            val_codes.append(classes[labelled & (hashes < validation_split)].astype("int64"))
            lowest = int(np.argmin(np.where(labelled, hashes, 2.0)))
            smallest = min(smallest, (float(hashes[lowest]), int(classes[lowest])))
    threshold, held_out = validation_split, np.concatenate(val_codes) if val_codes else np.array([], "int64")
    if not len(held_out) and labelled_rows > 1:
        threshold, held_out = np.nextafter(smallest[0], 1.0), np.array([smallest[1]], "int64")
    names = sorted(codes, key=_sort_key)
    remap = np.array([names.index(name) for name in codes], dtype="int64")
    data = TrainingData(
        source=source,
        feature_columns=list(feature_columns),
        column_types={name: types[name] for name in feature_columns},
        label_column=label_column,
        seed=seed,
        threshold=float(threshold),
        label_names=names,
        train_rows=labelled_rows - len(held_out),
        val_labels=remap[held_out],
        train_sample=Rows({}, np.array([])),
        val_sample=Rows({}, np.array([])),
    )
    if not data.train_rows or not data.val_rows:
        raise ValueError(f"the dataset has {labelled_rows} labelled rows; a job needs at least two")
    data.train_sample = _first(data.rows(validation=False), ADAPT_ROWS, data.feature_columns)
    data.val_sample = _first(data.rows(validation=True), VALIDATION_SAMPLE_ROWS, data.feature_columns)
    return data


def _first(chunks: Iterator[Rows], limit: int, names: list[str]) -> Rows:
    parts, held = [], 0
    for chunk in chunks:
        parts.append(chunk.take(slice(0, limit - held)))
        held += len(parts[-1])
        if held >= limit:
            break
    return Rows.concat(parts, names)
