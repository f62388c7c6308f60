"""Model templates a tenant can train: their hyperparameters (JSON Schema) and the columns they need.

Plain data, no TensorFlow: the API validates jobs against these; the
trainer (``training/trainer``) builds the Keras models from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jsonschema


@dataclass(frozen=True)
class ColumnSpec:
    """What a template reads from the dataset."""

    feature_types: tuple[str, ...]  # allowed schema types of each feature column
    min_features: int
    max_features: int | None
    label_types: tuple[str, ...]
    task: str  # binary | multiclass | binary_or_multiclass


@dataclass(frozen=True)
class Template:
    name: str
    title: str
    description: str
    params_schema: dict[str, Any]
    columns: ColumnSpec
    tags: tuple[str, ...] = field(default_factory=tuple)

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
                    "vocab_size": _int(0, 0, 5_000_000, "ids >= this share one bucket; 0 = from the dataset"),
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
