"""The seed model: click-through probability from a user's behaviour sequence (item ids)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django.conf import settings

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


def derived_vocab_size(*, params: Mapping[str, Any], column_stats: Mapping[str, Any]) -> int:
    """The id vocabulary of a sequence_ctr model: the ``vocab_size`` parameter, else one past the dataset's largest
    id, capped by ``TRAINING_MAX_VOCAB_SIZE`` (a single huge id in the data must not size the embedding; ids at or
    above the vocabulary share its last, out-of-vocabulary bucket)."""
    if params.get("vocab_size"):
        return int(params["vocab_size"])
    max_id = int(column_stats.get("max_id") or 1000)
    return max(1, min(max_id + 1, settings.TRAINING_MAX_VOCAB_SIZE))


def estimate(params: Mapping[str, Any], columns: Mapping[str, Mapping[str, Any]], classes: int) -> MemoryEstimate:
    (stats,) = columns.values()
    rows = derived_vocab_size(params=params, column_stats=stats) + 2  # padding and out-of-vocabulary rows
    dim, filters, units = params["embedding_dim"], params["conv_filters"], params["lstm_units"]
    steps, pooled = params["max_len"], max(1, params["max_len"] // params["pool_size"])
    parameters = (
        rows * dim
        + params["conv_kernel"] * dim * filters
        + filters
        + lstm_parameters(filters, units)
        + dense_parameters(units, 1)
    )
    activations = steps * (1 + dim + filters) + pooled * (filters + 6 * units) + units + 1
    return MemoryEstimate(parameters=parameters, activations_per_example=activations)


def learned_from_data(params: Mapping[str, Any]) -> tuple[str, ...]:
    """Ids are public integers: only a vocabulary derived from the data's largest id says anything of a row."""
    if params.get("vocab_size"):
        return ()
    return ("the embedding's size: one past the largest id in the dataset (set vocab_size to make it public)",)


def build(ctx: BuildContext) -> keras.Model:
    # Imported here, not at the top: the registry is imported by the API and serving, which must never load
    # TensorFlow; only the training worker calls build.
    from training.trainer import models

    column = ctx.column
    vocab_size = derived_vocab_size(params=ctx.params, column_stats=ctx.column_stats.get(column, {}))  # capped
    return models.sequence_ctr(column=column, params=ctx.params, vocab_size=vocab_size, unroll=ctx.private)


TEMPLATE = Template(
    name="sequence_ctr",
    title="Click-through model over behaviour sequences",
    description=(
        "The seed model: a user's item-id sequence (space-separated ids, as in the dataset) padded or "
        "truncated to max_len -> Embedding -> Conv1D -> MaxPooling1D -> LSTM -> Dense(1, sigmoid); "
        "binary cross-entropy, AUC."
    ),
    params_schema=schema(
        {
            "max_len": integer(50, 2, 2000, "sequence length after padding/truncation (keeps the most recent ids)"),
            "vocab_size": integer(
                0, 0, 5_000_000, "ids >= this share one bucket; 0 = from the dataset (capped by the platform)"
            ),
            "embedding_dim": integer(128, 4, 1024, "embedding width"),
            "conv_filters": integer(64, 1, 1024, "Conv1D filters"),
            "conv_kernel": integer(3, 1, 15, "Conv1D kernel size"),
            "pool_size": integer(2, 1, 8, "MaxPooling1D size"),
            "lstm_units": integer(128, 1, 1024, "LSTM units"),
        }
    ),
    columns=ColumnSpec(
        feature_types=("id_sequence",),
        min_features=1,
        max_features=1,
        label_types=("integer", "boolean"),
        task="binary",
    ),
    task="binary",
    evaluation="binary",
    input_kind="id_sequence",
    estimator=estimate,
    build=build,
    tags=("recommendation", "e-commerce"),
    learned_from_data=learned_from_data,
)
