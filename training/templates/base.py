"""What a template declares, and the helpers its module uses to declare it.

Plain data, no TensorFlow: the API validates jobs against templates and the
serving process reads their kinds, and neither may load TensorFlow. A
template's ``build`` imports Keras inside the function, when the training
worker calls it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jsonschema

from training.evaluation import EVALUATIONS

if TYPE_CHECKING:
    import keras
    import numpy as np

    # For type hints only: the trainer's modules are the worker's, and builders get the data at run time.
    from training.trainer.data import TrainingData

FLOAT_BYTES = 4
# Per trainable value: the weight, its gradient and Adam's two moments, all float32.
BYTES_PER_PARAMETER = 4 * FLOAT_BYTES
# Activations are kept for the backward pass and matched by their gradients.
ACTIVATION_COPIES = 2

# What the model's output means, which fixes its loss, the label encoding, the manifest's output and how serving
# decodes a row: "binary" is one probability per row (of the last label), "multiclass" one per label (softmax).
TASKS = ("binary", "multiclass")
# What one row given to the model is, so the trainer feeds it and serving checks a request without knowing the
# template: "id_sequence" and "text" are one string column (ids separated by spaces are checked before a batch),
# "columns" one (N, 1) tensor per feature column.
INPUT_KINDS = ("id_sequence", "text", "columns")
# The evaluation kinds (``training.evaluation.EVALUATIONS``) and the task each one reads.
EVALUATION_TASKS = {name: evaluation.task for name, evaluation in EVALUATIONS.items()}


@dataclass(frozen=True)
class ColumnSpec:
    """What a template reads from the dataset (what the job form offers and ``create_job`` checks)."""

    feature_types: tuple[str, ...]  # allowed schema types of each feature column
    min_features: int
    max_features: int | None
    label_types: tuple[str, ...]
    task: str  # the labels it takes, for people choosing a template: binary | multiclass | binary_or_multiclass


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
class BuildContext:
    """Everything a template's ``build`` may read, so the trainer never needs to know which template it runs."""

    params: dict[str, Any]  # resolved against the template's schema
    feature_columns: list[str]  # in the job's order
    column_types: dict[str, str]  # feature column -> its type in the dataset's schema
    column_stats: dict[str, dict[str, Any]]  # feature column -> its stats from the dataset's profile ({} if none)
    data: TrainingData
    classes: int  # label classes in the loaded data
    # A private job (DP-SGD): its per-example gradients are vectorized, so recurrent layers must be unrolled
    # (``tf.vectorized_map`` cannot vectorize a rolled LSTM's loop; the math is the same either way), and what
    # preprocessing can avoid learning from the rows it should not learn (text hashes its tokens).
    private: bool = False

    @property
    def column(self) -> str:
        """The one feature column of a single-input template."""
        (column,) = self.feature_columns
        return column

    def train_features(self) -> dict[str, np.ndarray]:
        """Feature column -> values of the training split (what preprocessing layers are adapted on): its first
        ``training.trainer.data.ADAPT_ROWS`` rows, so a large dataset is not held in memory to adapt on."""
        return self.data.train_sample.features


Builder = Callable[[BuildContext], "keras.Model"]


@dataclass(frozen=True)
class Template:
    """One model template: the module that declares it is the only place that knows its name.

    The trainer, the evaluation and serving read ``task``, ``evaluation`` and
    ``input_kind`` from here (serving from the version's manifest, where the
    trainer writes them), so a new template is one module and a ``register``.
    """

    name: str
    title: str
    description: str
    params_schema: dict[str, Any]
    columns: ColumnSpec
    task: str  # one of TASKS
    evaluation: str  # a key of training.evaluation.EVALUATIONS reading this task
    input_kind: str  # one of INPUT_KINDS
    estimator: Estimator
    build: Builder  # -> a compiled keras.Model taking raw values (imports Keras lazily)
    tags: tuple[str, ...] = field(default_factory=tuple)
    # What a private job's model (built with ``BuildContext.private``) still learns from the training rows
    # themselves for these params (a vocabulary, category lists, statistics): published inside the model, outside
    # what DP-SGD's guarantee covers. Private versions name it in their privacy statement.
    learned_from_data: Callable[[Mapping[str, Any]], tuple[str, ...]] = lambda params: ()

    def __post_init__(self) -> None:
        # Checked when the module is imported, so a wrong declaration fails the process at start, not a job later.
        if self.task not in TASKS:
            raise ValueError(f"template {self.name}: task {self.task!r} is not one of {TASKS}")
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"template {self.name}: input_kind {self.input_kind!r} is not one of {INPUT_KINDS}")
        if EVALUATION_TASKS.get(self.evaluation) != self.task:
            raise ValueError(
                f"template {self.name}: evaluation {self.evaluation!r} does not read a {self.task} model's output "
                f"(evaluations: {EVALUATION_TASKS})"
            )
        if self.task == "binary" and self.columns.task != "binary":
            raise ValueError(f"template {self.name}: a binary model takes binary labels only (columns.task)")
        if self.input_kind != "columns" and self.columns.max_features != 1:
            raise ValueError(f"template {self.name}: a {self.input_kind} input reads exactly one feature column")

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


# --- schema helpers ----------------------------------------------------------------------------


def integer(default: int, minimum: int, maximum: int, description: str) -> dict[str, Any]:
    return {"type": "integer", "default": default, "minimum": minimum, "maximum": maximum, "description": description}


def number(default: float, minimum: float, maximum: float, description: str) -> dict[str, Any]:
    return {"type": "number", "default": default, "minimum": minimum, "maximum": maximum, "description": description}


def schema(properties: dict[str, Any]) -> dict[str, Any]:
    """A params schema: the parameters every job has (the trainer reads them) plus the template's own."""
    return {"type": "object", "additionalProperties": False, "properties": COMMON_PARAMS | properties}


COMMON_PARAMS = {
    "epochs": integer(5, 1, 200, "passes over the training split"),
    "batch_size": integer(64, 1, 8192, "examples per step"),
    "learning_rate": number(1e-3, 1e-6, 1.0, "Adam learning rate"),
    "mixed_precision": {"type": "boolean", "default": False, "description": "float16 compute on GPUs (ignored on CPU)"},
}


# --- parameter counts for memory estimates -----------------------------------------------------


def lstm_parameters(inputs: int, units: int) -> int:
    return 4 * units * (inputs + units + 1)  # kernel, recurrent kernel and bias of the four gates


def dense_parameters(inputs: int, units: int) -> int:
    return inputs * units + units
