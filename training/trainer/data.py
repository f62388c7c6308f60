"""Loading a dataset for training: feature columns and encoded labels, split by seed (NumPy only)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core import storage
from datasets.readers import open_rows


@dataclass
class TrainingData:
    features: dict[str, np.ndarray]  # column -> values as served (strings for text and id sequences)
    labels: np.ndarray  # class indices
    label_names: list[str]
    train_index: np.ndarray
    val_index: np.ndarray

    def split(self, index: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        return {name: values[index] for name, values in self.features.items()}, self.labels[index]


def _feature_array(values: list, column_type: str) -> np.ndarray:
    if column_type in {"integer", "float"}:
        return np.array([np.nan if v in (None, "") else float(v) for v in values], dtype="float32")
    if column_type == "boolean":
        return np.array([str(v).strip().lower() in {"true", "1"} for v in values], dtype="float32")
    if column_type == "id_sequence":
        return np.array(
            [" ".join(map(str, v)) if isinstance(v, list) else ("" if v is None else str(v)) for v in values],
            dtype=object,
        )
    return np.array(["" if v is None else str(v) for v in values], dtype=object)


def _label_key(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    text = str(value).strip()
    return {"true": "1", "false": "0"}.get(text.lower(), text)


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
    """Read the stored dataset once (rows without a label are skipped) and split it reproducibly."""
    types = {column["name"]: column["type"] for column in schema}
    raw: dict[str, list] = {name: [] for name in feature_columns}
    labels: list[str] = []
    with storage.open_reader(object_key) as stream:
        _, rows = open_rows(fmt, stream)
        for _, row in rows:
            label = row.get(label_column)
            if label is None or label == "":
                continue
            labels.append(_label_key(label))
            for name in feature_columns:
                raw[name].append(row.get(name))
    names = sorted(set(labels), key=lambda x: (len(x), x) if x.lstrip("-").isdigit() else (10**9, x))
    index = {name: i for i, name in enumerate(names)}
    encoded = np.array([index[label] for label in labels], dtype="int64")
    order = np.random.default_rng(seed).permutation(len(encoded))
    validation = max(1, round(len(encoded) * validation_split))
    return TrainingData(
        features={name: _feature_array(values, types[name]) for name, values in raw.items()},
        labels=encoded,
        label_names=names,
        train_index=np.sort(order[validation:]),
        val_index=np.sort(order[:validation]),
    )
