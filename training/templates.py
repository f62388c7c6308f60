"""Model templates a tenant can train: their hyperparameters (JSON Schema) and the columns they need.

Plain data, no TensorFlow: the API validates jobs against these; the
trainer (``training/trainer``) builds the Keras models from them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from django.conf import settings

FLOAT_BYTES = 4
# Per trainable value: the weight, its gradient and Adam's two moments, all float32.
BYTES_PER_PARAMETER = 4 * FLOAT_BYTES
# Activations are kept for the backward pass and matched by their gradients.
ACTIVATION_COPIES = 2
# Categories a tabular string column is looked up into (the most frequent; the rest share the OOV bucket).
TABULAR_MAX_CATEGORIES = 10_000


@dataclass(frozen=True)
class ColumnSpec:
    """What a template reads from the dataset."""

    feature_types: tuple[str, ...]  # allowed schema types of each feature column
    min_features: int
    max_features: int | None
    label_types: tuple[str, ...]
    task: str  # binary | multiclass | binary_or_multiclass


@dataclass(frozen=True)
class MemoryEstimate:
    """What a job's model needs in memory while it trains (float32, one batch in flight)."""

    parameters: int  # what Keras' count_params() reports for the built model
    activations_per_example: int  # float values kept per example for the backward pass

    def bytes_for(self, batch_size: int) -> int:
        return (
            self.parameters * BYTES_PER_PARAMETER
            + batch_size * self.activations_per_example * FLOAT_BYTES * ACTIVATION_COPIES
        )


# The dataset's profile as a template needs it: stats of each feature column (from profiling, with "type") and the
# number of label classes.
Estimator = Callable[[Mapping[str, Any], Mapping[str, Mapping[str, Any]], int], MemoryEstimate]


@dataclass(frozen=True)
class Template:
    name: str
    title: str
    description: str
    params_schema: dict[str, Any]
    columns: ColumnSpec
    estimator: Estimator
    tags: tuple[str, ...] = field(default_factory=tuple)

    def estimate_memory(
        self, params: Mapping[str, Any], *, columns: Mapping[str, Mapping[str, Any]], classes: int
    ) -> tuple[MemoryEstimate, int]:
        """The estimate and its bytes for resolved ``params``; ``columns`` maps each feature column to its stats."""
        estimate = self.estimator(params, columns, classes)
        return estimate, estimate.bytes_for(int(params["batch_size"]))

    def defaults(self) -> dict[str, Any]:
        return {k: v["default"] for k, v in self.params_schema["properties"].items() if "default" in v}

    def resolve_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Defaults filled in, then checked against the schema; raises jsonschema.ValidationError."""
        merged = self.defaults() | dict(params)
        jsonschema.validate(merged, self.params_schema, cls=jsonschema.Draft202012Validator)
        return merged


def _int(default: int, minimum: int, maximum: int, description: str) -> dict[str, Any]:
    return {"type": "integer", "default": default, "minimum": minimum, "maximum": maximum, "description": description}


def _num(default: float, minimum: float, maximum: float, description: str) -> dict[str, Any]:
    return {"type": "number", "default": default, "minimum": minimum, "maximum": maximum, "description": description}


def _schema(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": properties}


def derived_vocab_size(*, params: Mapping[str, Any], column_stats: Mapping[str, Any]) -> int:
    """The id vocabulary of a sequence_ctr model: the ``vocab_size`` parameter, else one past the dataset's largest
    id, capped by ``TRAINING_MAX_VOCAB_SIZE`` (a single huge id in the data must not size the embedding; ids at or
    above the vocabulary share its last, out-of-vocabulary bucket)."""
    if params.get("vocab_size"):
        return int(params["vocab_size"])
    max_id = int(column_stats.get("max_id") or 1000)
    return max(1, min(max_id + 1, settings.TRAINING_MAX_VOCAB_SIZE))


def _lstm(inputs: int, units: int) -> int:
    return 4 * units * (inputs + units + 1)  # kernel, recurrent kernel and bias of the four gates


def _dense(inputs: int, units: int) -> int:
    return inputs * units + units


def _sequence_ctr_memory(params: Mapping[str, Any], columns: Mapping[str, Mapping[str, Any]], classes: int):
    (stats,) = columns.values()
    rows = derived_vocab_size(params=params, column_stats=stats) + 2  # padding and out-of-vocabulary rows
    dim, filters, units = params["embedding_dim"], params["conv_filters"], params["lstm_units"]
    steps, pooled = params["max_len"], max(1, params["max_len"] // params["pool_size"])
    parameters = rows * dim + params["conv_kernel"] * dim * filters + filters + _lstm(filters, units) + _dense(units, 1)
    activations = steps * (1 + dim + filters) + pooled * (filters + 6 * units) + units + 1
    return MemoryEstimate(parameters=parameters, activations_per_example=activations)


def _text_classifier_memory(params: Mapping[str, Any], columns: Mapping[str, Mapping[str, Any]], classes: int):
    dim, steps, units = params["embedding_dim"], params["sequence_length"], params["lstm_units"]
    parameters = (params["max_tokens"] + 1) * dim
    activations = steps * (1 + dim)
    if params["encoder"] == "bilstm":
        parameters += 2 * _lstm(dim, units) + _dense(2 * units, classes)
        activations += 2 * steps * 6 * units + 2 * units
    else:
        parameters += _dense(dim, dim) + _dense(dim, classes)
        activations += 2 * dim
    return MemoryEstimate(parameters=parameters, activations_per_example=activations + classes)


def tabular_width(stats: Mapping[str, Any]) -> int:
    """Inputs a tabular column feeds the network: a one-hot over its categories (plus the OOV one), else 1."""
    if stats.get("type") != "string":
        return 1
    distinct = TABULAR_MAX_CATEGORIES if stats.get("distinct_approximate") else int(stats.get("distinct") or 0)
    return min(distinct + 1, TABULAR_MAX_CATEGORIES)


def _tabular_classifier_memory(params: Mapping[str, Any], columns: Mapping[str, Mapping[str, Any]], classes: int):
    width = sum(tabular_width(stats) for stats in columns.values())
    # Normalization keeps a mean, a variance and a count per numeric column (not trained, but counted by Keras).
    parameters = sum(3 for stats in columns.values() if stats.get("type") != "string")
    activations = width
    for units in params["hidden_units"]:
        parameters += _dense(width, units)
        activations += 2 * units  # the layer and its dropout
        width = units
    parameters += _dense(width, classes)
    return MemoryEstimate(parameters=parameters, activations_per_example=activations + classes)


_COMMON = {
    "epochs": _int(5, 1, 200, "passes over the training split"),
    "batch_size": _int(64, 1, 8192, "examples per step"),
    "learning_rate": _num(1e-3, 1e-6, 1.0, "Adam learning rate"),
    "mixed_precision": {"type": "boolean", "default": False, "description": "float16 compute on GPUs (ignored on CPU)"},
}

TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in [
        Template(
            name="sequence_ctr",
            title="Click-through model over behaviour sequences",
            description=(
                "The seed model: a user's item-id sequence (space-separated ids, as in the dataset) padded or "
                "truncated to max_len -> Embedding -> Conv1D -> MaxPooling1D -> LSTM -> Dense(1, sigmoid); "
                "binary cross-entropy, AUC."
            ),
            params_schema=_schema(
                _COMMON
                | {
                    "max_len": _int(
                        50, 2, 2000, "sequence length after padding/truncation (keeps the most recent ids)"
                    ),
                    "vocab_size": _int(
                        0, 0, 5_000_000, "ids >= this share one bucket; 0 = from the dataset (capped by the platform)"
                    ),
                    "embedding_dim": _int(128, 4, 1024, "embedding width"),
                    "conv_filters": _int(64, 1, 1024, "Conv1D filters"),
                    "conv_kernel": _int(3, 1, 15, "Conv1D kernel size"),
                    "pool_size": _int(2, 1, 8, "MaxPooling1D size"),
                    "lstm_units": _int(128, 1, 1024, "LSTM units"),
                }
            ),
            columns=ColumnSpec(
                feature_types=("id_sequence",),
                min_features=1,
                max_features=1,
                label_types=("integer", "boolean"),
                task="binary",
            ),
            estimator=_sequence_ctr_memory,
            tags=("recommendation", "e-commerce"),
        ),
        Template(
            name="text_classifier",
            title="Text classifier (sentiment, topic, intent)",
            description=(
                "Raw text in any language (Chinese is split into characters, others into words) -> "
                "TextVectorization adapted on the training split -> Embedding -> bidirectional LSTM or pooling "
                "-> softmax over the label set; label names are served back."
            ),
            params_schema=_schema(
                _COMMON
                | {
                    "max_tokens": _int(20000, 100, 500_000, "vocabulary size"),
                    "sequence_length": _int(64, 4, 2000, "tokens per text after padding/truncation"),
                    "embedding_dim": _int(64, 4, 1024, "embedding width"),
                    "encoder": {"type": "string", "enum": ["bilstm", "pooling"], "default": "pooling"},
                    "lstm_units": _int(64, 1, 1024, "units per direction when encoder is bilstm"),
                    "tokenize": {"type": "string", "enum": ["auto", "words", "characters"], "default": "auto"},
                }
            ),
            columns=ColumnSpec(
                feature_types=("text", "string"),
                min_features=1,
                max_features=1,
                label_types=("string", "integer", "boolean"),
                task="binary_or_multiclass",
            ),
            estimator=_text_classifier_memory,
            tags=("sentiment", "topic", "intent", "finance", "customer-service"),
        ),
        Template(
            name="tabular_classifier",
            title="Tabular classifier",
            description=(
                "Numeric columns normalised and categorical columns looked up inside the model -> DNN -> "
                "class probabilities (binary or multiclass)."
            ),
            params_schema=_schema(
                _COMMON
                | {
                    "hidden_units": {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 1, "maximum": 4096},
                        "minItems": 1,
                        "maxItems": 8,
                        "default": [64, 32],
                    },
                    "dropout": _num(0.1, 0.0, 0.9, "dropout after each hidden layer"),
                }
            ),
            columns=ColumnSpec(
                feature_types=("integer", "float", "boolean", "string"),
                min_features=1,
                max_features=500,
                label_types=("integer", "boolean", "string"),
                task="binary_or_multiclass",
            ),
            estimator=_tabular_classifier_memory,
            tags=("credit-risk", "tables"),
        ),
    ]
}


def describe(template: Template) -> dict[str, Any]:
    columns = template.columns
    return {
        "name": template.name,
        "title": template.title,
        "description": template.description,
        "params_schema": template.params_schema,
        "columns": {
            "feature_types": list(columns.feature_types),
            "min_features": columns.min_features,
            "max_features": columns.max_features,
            "label_types": list(columns.label_types),
            "task": columns.task,
        },
        "tags": list(template.tags),
    }
