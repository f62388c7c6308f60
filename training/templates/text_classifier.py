"""Raw text in any language -> softmax over the label set (sentiment, topic, intent)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from training.templates.base import (
    BuildContext,
    ColumnSpec,
    MemoryEstimate,
    Template,
    dense_parameters,
    integer,
    lstm_parameters,
    schema,
)

if TYPE_CHECKING:
    import keras


def estimate(params: Mapping[str, Any], columns: Mapping[str, Mapping[str, Any]], classes: int) -> MemoryEstimate:
    dim, steps, units = params["embedding_dim"], params["sequence_length"], params["lstm_units"]
    parameters = (params["max_tokens"] + 1) * dim
    activations = steps * (1 + dim)
    if params["encoder"] == "bilstm":
        parameters += 2 * lstm_parameters(dim, units) + dense_parameters(2 * units, classes)
        activations += 2 * steps * 6 * units + 2 * units
    else:
        parameters += dense_parameters(dim, dim) + dense_parameters(dim, classes)
        activations += 2 * dim
    return MemoryEstimate(parameters=parameters, activations_per_example=activations + classes)


def learned_from_data(params: Mapping[str, Any]) -> tuple[str, ...]:
    """A private model hashes its tokens (no vocabulary from the rows); only ``tokenize: auto`` reads them."""
    if params.get("tokenize", "auto") == "auto":
        return ("whether texts are split into characters or words (from the first 2,000 training texts)",)
    return ()


def build(ctx: BuildContext) -> keras.Model:
    # Imported here, not at the top: the registry is imported by the API and serving, which must never load
    # TensorFlow; only the training worker calls build.
    from training.trainer import models

    texts = ctx.train_features()[ctx.column].astype(str)  # the vectorizer is adapted on the training split only
    return models.text_classifier(
        column=ctx.column, params=ctx.params, texts=texts, classes=ctx.classes, private=ctx.private
    )


TEMPLATE = Template(
    name="text_classifier",
    title="Text classifier (sentiment, topic, intent)",
    description=(
        "Raw text in any language (Chinese is split into characters, others into words) -> "
        "TextVectorization adapted on the training split -> Embedding -> bidirectional LSTM or pooling "
        "-> softmax over the label set; label names are served back."
    ),
    params_schema=schema(
        {
            "max_tokens": integer(20000, 100, 500_000, "vocabulary size"),
            "sequence_length": integer(64, 4, 2000, "tokens per text after padding/truncation"),
            "embedding_dim": integer(64, 4, 1024, "embedding width"),
            "encoder": {"type": "string", "enum": ["bilstm", "pooling"], "default": "pooling"},
            "lstm_units": integer(64, 1, 1024, "units per direction when encoder is bilstm"),
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
    # Softmax over the labels even for two: the served answer names the label; evaluation adds the binary view.
    task="multiclass",
    evaluation="multiclass",
    input_kind="text",
    estimator=estimate,
    build=build,
    learned_from_data=learned_from_data,
    tags=("sentiment", "topic", "intent", "finance", "customer-service"),
)
