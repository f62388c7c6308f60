"""Numeric and categorical columns -> DNN -> class probabilities (binary or multiclass)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from training.templates.base import BuildContext, ColumnSpec, MemoryEstimate, Template, dense_parameters, number, schema

if TYPE_CHECKING:
    import keras

# Categories a tabular string column is looked up into (the most frequent; the rest share the OOV bucket).
TABULAR_MAX_CATEGORIES = 10_000


def tabular_width(stats: Mapping[str, Any]) -> int:
    """Inputs a tabular column feeds the network: a one-hot over its categories (plus the OOV one), else 1."""
    if stats.get("type") != "string":
        return 1
    distinct = TABULAR_MAX_CATEGORIES if stats.get("distinct_approximate") else int(stats.get("distinct") or 0)
    return min(distinct + 1, TABULAR_MAX_CATEGORIES)


def estimate(params: Mapping[str, Any], columns: Mapping[str, Mapping[str, Any]], classes: int) -> MemoryEstimate:
    width = sum(tabular_width(stats) for stats in columns.values())
    # Numeric columns are standardized by constants (no weights); string columns' one-hot lookups hold no weights.
    parameters, activations = 0, width
    for units in params["hidden_units"]:
        parameters += dense_parameters(width, units)
        activations += 2 * units  # the layer and its dropout
        width = units
    parameters += dense_parameters(width, classes)
    return MemoryEstimate(parameters=parameters, activations_per_example=activations + classes)


def learned_from_data(params: Mapping[str, Any]) -> tuple[str, ...]:
    """Lookups and standardization are adapted on the training split: their values are in the model."""
    return (
        f"each categorical column's categories: up to {TABULAR_MAX_CATEGORIES} values of the training split",
        "each number column's mean and variance over the training split",
    )


def build(ctx: BuildContext) -> keras.Model:
    # Imported here, not at the top: the registry is imported by the API and serving, which must never load
    # TensorFlow; only the training worker calls build.
    from training.trainer import models

    return models.tabular_classifier(
        columns={c: ctx.column_types[c] for c in ctx.feature_columns},
        params=ctx.params,
        features=ctx.train_features(),
        classes=ctx.classes,
    )


TEMPLATE = Template(
    name="tabular_classifier",
    title="Tabular classifier",
    description=(
        "Numeric columns normalised and categorical columns looked up inside the model -> DNN -> "
        "class probabilities (binary or multiclass)."
    ),
    params_schema=schema(
        {
            "hidden_units": {
                "type": "array",
                "items": {"type": "integer", "minimum": 1, "maximum": 4096},
                "minItems": 1,
                "maxItems": 8,
                "default": [64, 32],
            },
            "dropout": number(0.1, 0.0, 0.9, "dropout after each hidden layer"),
        }
    ),
    columns=ColumnSpec(
        feature_types=("integer", "float", "boolean", "string"),
        min_features=1,
        max_features=500,
        label_types=("integer", "boolean", "string"),
        task="binary_or_multiclass",
    ),
    # Softmax over the labels even for two; evaluation adds the binary view (AUC, ROC) then.
    task="multiclass",
    evaluation="multiclass",
    input_kind="columns",
    estimator=estimate,
    build=build,
    tags=("credit-risk", "tables"),
    learned_from_data=learned_from_data,
)
