"""The template registry: every model template a tenant can train, one module each.

A template's module declares everything about it (``TEMPLATE = Template(...)``:
hyperparameter schema, columns, task, evaluation, input kind, memory
estimator, Keras builder); the API validates jobs against it, the trainer
builds, feeds and evaluates by asking it, and serving reads the task and
input kind from the version's manifest. No other module compares template
names, so adding a template is its module plus a ``register`` call (below
for the built-in ones).

Plain data, no TensorFlow: builders import Keras only when the worker calls them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Built-in templates import only training.templates.base, never this module's names, so there is no import cycle.
from training.templates import sequence_ctr, tabular_classifier, text_classifier
from training.templates.base import (
    INPUT_KINDS,
    TASKS,
    BuildContext,
    ColumnSpec,
    MemoryEstimate,
    Template,
)
from training.templates.sequence_ctr import derived_vocab_size
from training.templates.tabular_classifier import TABULAR_MAX_CATEGORIES, tabular_width

__all__ = [
    "INPUT_KINDS",
    "TABULAR_MAX_CATEGORIES",
    "TASKS",
    "TEMPLATES",
    "BuildContext",
    "ColumnSpec",
    "MemoryEstimate",
    "Template",
    "derived_vocab_size",
    "describe",
    "get",
    "manifest_kinds",
    "register",
    "tabular_width",
    "unregister",
]

# name -> template. Modules import this dict itself (``from training.templates import TEMPLATES``), so it is only
# ever changed in place.
TEMPLATES: dict[str, Template] = {}


def register(template: Template) -> Template:
    """Make ``template`` trainable (listed, accepted by job submission, built by the worker); returns it.

    Registering a second, different template under a taken name is an error: jobs and published versions
    store the name, and it must keep meaning the same model.
    """
    existing = TEMPLATES.get(template.name)
    if existing is not None and existing is not template:
        raise ValueError(f"a template named {template.name!r} is already registered")
    TEMPLATES[template.name] = template
    return template


def unregister(name: str) -> None:
    """Remove a template (tests registering their own clean up with this); unknown names are ignored."""
    TEMPLATES.pop(name, None)


def get(name: str) -> Template:
    """The registered template ``name``; LookupError when there is none (a job's template was unregistered)."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise LookupError(f"no template named {name!r} is registered") from None


def describe(template: Template) -> dict[str, Any]:
    """A template as ``GET /api/v1/templates`` lists it."""
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
        "task": template.task,
        "evaluation": template.evaluation,
        "input_kind": template.input_kind,
    }


# The output key a version's manifest names (``signature.outputs``) and the task it implies.
_OUTPUT_TASKS = {"probability": "binary", "probabilities": "multiclass"}


def manifest_kinds(manifest: Mapping[str, Any]) -> dict[str, str]:
    """A published version's ``task`` and ``input_kind``, for serving.

    The trainer writes both into the manifest; versions published before it
    did lack them. For those, the task follows from the manifest's own output
    key, and whatever is still missing is the declaration of the template the
    manifest names, looked up here (the one place that knows templates), so
    serving never compares template names. ValueError when neither tells
    (an old version of a template no longer registered).
    """
    kinds = {key: str(manifest[key]) for key in ("task", "input_kind") if manifest.get(key)}
    if "task" not in kinds:
        outputs = (manifest.get("signature") or {}).get("outputs") or {}
        tasks = {_OUTPUT_TASKS[key] for key in outputs if key in _OUTPUT_TASKS}
        if len(tasks) == 1:
            kinds["task"] = tasks.pop()
    if len(kinds) < 2:
        template = TEMPLATES.get(str(manifest.get("template") or ""))
        if template is None:
            raise ValueError(
                f"the manifest has no task or input kind and its template {manifest.get('template')!r} is not "
                "registered"
            )
        kinds.setdefault("task", template.task)
        kinds.setdefault("input_kind", template.input_kind)
    return kinds


for _module in (sequence_ctr, text_classifier, tabular_classifier):
    register(_module.TEMPLATE)
