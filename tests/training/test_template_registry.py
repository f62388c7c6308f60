"""One template registry: only ``training/templates/`` knows template names; the trainer, the evaluation and
serving ask the registry (serving reads the kinds from the manifest), so a new template is one module and a
``register`` call.

The fourth template here is defined in this file alone and goes through the whole path: listed, submitted,
dispatched, trained, evaluated, published and served, with no platform file knowing it.
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from serving.models import ModelVersion
from serving.runtime.signatures import Signature
from tests.support.jobs import capture_tasks, job_ids, ready_dataset
from tests.support.serving import call, serving_server
from training import services as job_services
from training import templates
from training.models import TrainingJob
from training.templates.base import BuildContext, ColumnSpec, MemoryEstimate, Template, number, schema
from training.trainer.run import run_job

ROOT = Path(__file__).resolve().parents[2]
# The built-in templates' names, read from the registry (before any test registers its own).
BUILT_IN = frozenset(templates.TEMPLATES)

# --- no template names outside the registry --------------------------------------------------------------------

# Where template names may be compared: the registry itself, migrations (history), tests, docs, local data.
ALLOWED_DIRS = {".venv", ".git", "node_modules", "var", "tests", "migrations", "docs", "__pycache__"}
ALLOWED_PREFIXES = ("training/templates/",)
MARKUP_SUFFIXES = {".html", ".js", ".txt", ".jinja", ".jinja2"}
_EQUALITY = (ast.Eq, ast.NotEq, ast.Is, ast.IsNot)
_MEMBERSHIP = (ast.In, ast.NotIn)


def _source_files() -> Iterator[Path]:
    for path in sorted(ROOT.rglob("*")):
        relative = path.relative_to(ROOT)
        if not path.is_file() or set(relative.parts[:-1]) & ALLOWED_DIRS:
            continue
        if relative.as_posix().startswith(ALLOWED_PREFIXES):
            continue
        if path.suffix == ".py" or path.suffix in MARKUP_SUFFIXES:
            yield path


def _names_in(node: ast.AST | None, names: frozenset[str], aliases: Mapping[str, set[str]]) -> set[str]:
    """Template names ``node`` stands for: a string constant, a literal container of them, or a module-level
    variable bound to either (``CTR = "sequence_ctr"``; ``KINDS = ("a", "b")``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value} & names
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return set().union(*(_names_in(item, names, aliases) for item in node.elts))
    if isinstance(node, ast.Dict):
        return set().union(*(_names_in(key, names, aliases) for key in node.keys))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in {"set", "frozenset"}:
        return set().union(*(_names_in(arg, names, aliases) for arg in node.args))
    if isinstance(node, ast.Name):
        return aliases.get(node.id, set())
    return set()


def _aliases(tree: ast.Module, names: frozenset[str]) -> dict[str, set[str]]:
    """Variables assigned a template name (or a container of them) anywhere in the module."""
    found: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        bound = _names_in(value, names, {})
        for target in targets:
            if bound and isinstance(target, ast.Name):
                found.setdefault(target.id, set()).update(bound)
    return found


def python_comparisons(source: str, names: frozenset[str]) -> list[tuple[int, str]]:
    """(line, name) of every place ``source`` decides by a template name: ``==``/``!=``/``is`` with one, an
    ``in`` test on a literal (or a variable) holding one, a ``match`` case on one, or a dict keyed by one (a
    dispatch table). Passing a name (``template="sequence_ctr"``) or looking it up in the registry is fine."""
    tree = ast.parse(source)
    aliases = _aliases(tree, names)
    hits: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for index, op in enumerate(node.ops):
                left, right = operands[index], operands[index + 1]
                if isinstance(op, _EQUALITY):
                    sides = _names_in(left, names, aliases) | _names_in(right, names, aliases)
                elif isinstance(op, _MEMBERSHIP):
                    sides = _names_in(left, names, aliases) | _names_in(right, names, aliases)
                    if isinstance(right, ast.Constant) and isinstance(right.value, str):  # x in "a b": a substring
                        sides |= {name for name in names if name in right.value}
                else:
                    continue
                hits.extend((node.lineno, name) for name in sides)
        elif isinstance(node, ast.match_case):
            for pattern in ast.walk(node.pattern):
                if isinstance(pattern, ast.MatchValue):
                    hits.extend((pattern.lineno, name) for name in _names_in(pattern.value, names, aliases))
        elif isinstance(node, ast.Dict):
            hits.extend((node.lineno, name) for key in node.keys for name in _names_in(key, names, {}))
    return sorted(set(hits))


def markup_comparisons(text: str, names: frozenset[str]) -> list[tuple[int, str]]:
    """(line, name) of comparisons with a quoted template name in HTML templates and scripts."""
    hits = []
    for name in names:
        quoted = rf"""["']{re.escape(name)}["']"""
        pattern = re.compile(
            rf"(?:[=!]==?|\bcase\b)\s*{quoted}"  # x == "name", case "name":
            rf"|{quoted}\s*[=!]==?"  # "name" == x
            rf"|\bin\s*[(\[][^)\]]*{quoted}"  # x in ["a", "name"]
            rf"|\[[^\]]*{quoted}[^\]]*\]\s*\.includes\("  # ["name"].includes(x)
        )
        for line_number, line in enumerate(text.splitlines(), 1):
            if pattern.search(line):
                hits.append((line_number, name))
    return sorted(hits)


def test_the_detector_finds_every_way_of_deciding_by_a_template_name():
    """The scan below proves nothing if it finds nothing; here it must find each of these and none of the fine."""
    names = frozenset({"sequence_ctr", "text_classifier"})
    bad = """
CTR = "sequence_ctr"
KINDS = ("text_classifier",)
a = job.template == "sequence_ctr"
b = "sequence_ctr" != manifest.get("template")
c = job.template in ("sequence_ctr", "other")
d = job.template in {"text_classifier"}
e = t.name is "sequence_ctr"
f = job.template == CTR
g = job.template in KINDS
h = job.template not in "sequence_ctr text_classifier"
i = {"sequence_ctr": build_ctr}[job.template]
match job.template:
    case "text_classifier":
        pass
"""
    found = python_comparisons(bad, names)
    # Every line from a to i, and the case; not the two assignments themselves.
    assert {line for line, _ in found} == {4, 5, 6, 7, 8, 9, 10, 11, 12, 14}, found
    fine = '''
"""Docstrings may name sequence_ctr."""
job = create_job(template="sequence_ctr")
template = TEMPLATES["text_classifier"]
body = {"template": "sequence_ctr", "model_name": "ctr"}
assert template.task == "binary"
'''
    assert python_comparisons(fine, names) == []
    assert markup_comparisons('{% if version.template == "sequence_ctr" %}', names) == [(1, "sequence_ctr")]
    assert markup_comparisons("if (t === 'text_classifier') {}", names) == [(1, "text_classifier")]
    assert markup_comparisons("{% if t.name in ['x', 'sequence_ctr'] %}", names) == [(1, "sequence_ctr")]
    assert markup_comparisons("['text_classifier', 'x'].includes(t)", names) == [(1, "text_classifier")]
    fine_markup = '<option value="sequence_ctr">in the list: "sequence_ctr"</option> {{ job.template }}'
    assert markup_comparisons(fine_markup, names) == []


def test_no_module_outside_the_registry_compares_template_names():
    names = BUILT_IN
    found = []
    for path in _source_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        if not any(name in text for name in names):
            continue
        relative = path.relative_to(ROOT).as_posix()
        hits = python_comparisons(text, names) if path.suffix == ".py" else markup_comparisons(text, names)
        found.extend(f"{relative}:{line} decides by the template name {name!r}" for line, name in hits)
    assert not found, "ask training.templates (task, input_kind, evaluation, build) instead:\n" + "\n".join(found)


# --- a fourth template, from this file alone ---------------------------------------------------------------------


def _linear_memory(params: Mapping[str, Any], columns: Mapping[str, Mapping[str, Any]], classes: int):
    width = len(columns)
    # Normalization's mean, variance and count per column, then one weight per column and the bias.
    return MemoryEstimate(parameters=3 * width + width + 1, activations_per_example=2 * width + 1)


def _build_linear(ctx: BuildContext):
    # Keras only here: building happens in the worker, as for the built-in templates.
    import keras
    import numpy as np

    from training.trainer.models import compile_model

    features = ctx.train_features()
    inputs, scaled = [], []
    for name in ctx.feature_columns:
        raw = keras.Input(shape=(1,), dtype="float32", name=name)
        norm = keras.layers.Normalization(name=f"{name}_norm")
        norm.adapt(np.nan_to_num(features[name].astype("float32")).reshape(-1, 1))
        inputs.append(raw)
        scaled.append(norm(raw))
    x = keras.layers.Concatenate()(scaled) if len(scaled) > 1 else scaled[0]
    output = keras.layers.Dense(
        1,
        activation="sigmoid",
        kernel_regularizer=keras.regularizers.L2(ctx.params["l2"]),
        name="probability",
        dtype="float32",
    )(x)
    model = keras.Model(inputs, output, name="numeric_logistic")
    return compile_model(model, task="binary", learning_rate=ctx.params["learning_rate"])


# Binary over several numeric columns: a combination none of the built-in templates has (the click model is binary
# over one id sequence, the tabular classifier a softmax over columns), so neither the trainer nor serving can be
# getting it right by resembling a built-in one.
NUMERIC_LOGISTIC = Template(
    name="numeric_logistic",
    title="Logistic regression over numeric columns",
    description="Numeric columns normalised inside the model -> Dense(1, sigmoid); binary cross-entropy, AUC.",
    params_schema=schema({"l2": number(0.0, 0.0, 1.0, "L2 penalty on the weights")}),
    columns=ColumnSpec(
        feature_types=("integer", "float", "boolean"),
        min_features=1,
        max_features=50,
        label_types=("integer", "boolean"),
        task="binary",
    ),
    task="binary",
    evaluation="binary",
    input_kind="columns",
    estimator=_linear_memory,
    build=_build_linear,
    tags=("tests",),
)


@pytest.fixture
def numeric_logistic():
    templates.register(NUMERIC_LOGISTIC)
    yield NUMERIC_LOGISTIC
    templates.unregister(NUMERIC_LOGISTIC.name)


def _points_csv(rows: int) -> str:
    """Two numeric columns with a linear boundary (and a little noise), labelled 0/1."""
    rng = random.Random(7)  # noqa: S311 - test data, not a secret
    lines = ["x1,x2,label"]
    for _ in range(rows):
        x1, x2 = round(rng.gauss(0, 1), 4), rng.randint(0, 9)
        lines.append(f"{x1},{x2},{int(x1 + 0.3 * (x2 - 4.5) + rng.gauss(0, 0.3) > 0)}")
    return "\n".join(lines) + "\n"


def test_a_template_registered_from_a_test_is_listed_and_refused_once_removed(api_a):
    templates.register(NUMERIC_LOGISTIC)
    try:
        listed = {t["name"]: t for t in api_a.get("/api/v1/templates").json()}
        assert set(listed) == BUILT_IN | {"numeric_logistic"}
        assert listed["numeric_logistic"]["task"] == "binary"
        assert listed["numeric_logistic"]["input_kind"] == "columns"
        assert listed["numeric_logistic"]["params_schema"]["properties"]["l2"]["default"] == 0.0
        with pytest.raises(ValueError, match="already registered"):
            templates.register(Template(**(vars(NUMERIC_LOGISTIC) | {"title": "another"})))
    finally:
        templates.unregister("numeric_logistic")
    assert set(templates.TEMPLATES) == BUILT_IN
    with pytest.raises(LookupError):
        templates.get("numeric_logistic")


@pytest.mark.django_db(transaction=True)  # the serving server reads the registry from its own threads
def test_a_fourth_template_trains_publishes_and_serves(api_a, tenant_a, numeric_logistic, monkeypatch):
    sent = capture_tasks(monkeypatch, job_services.DISPATCH_JOBS, job_services.TRAIN_MODEL)
    dataset_id = ready_dataset(api_a, _points_csv(160), label="label", name="points")
    response = api_a.post(
        "/api/v1/jobs",
        {
            "dataset": dataset_id,
            "template": "numeric_logistic",
            "model_name": "points",
            "label_column": "label",
            "feature_columns": ["x1", "x2"],
            "params": {"epochs": 2, "batch_size": 16, "learning_rate": 0.05},
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    job_id = response.json()["id"]

    # Dispatched as a worker would be sent it, then run here in place of the worker.
    assert job_id in job_services.dispatch_queued_jobs()
    assert job_ids(sent) == [job_id]
    run_job(job_id=job_id, worker="test")

    job = TrainingJob.objects.get(pk=job_id)
    assert job.status == "succeeded", job.error_traceback[-3000:]
    assert job.metrics["task"] == "binary" and 0 <= job.metrics["auc"] <= 1 and "confusion_matrix" not in job.metrics
    version = ModelVersion.objects.get(job=job)
    manifest = version.manifest
    assert (manifest["template"], manifest["task"], manifest["input_kind"]) == ("numeric_logistic", "binary", "columns")
    assert set(manifest["signature"]["outputs"]) == {"probability"}
    assert manifest["signature"]["inputs"] == {
        "x1": {"dtype": "float32", "shape": [None, 1]},
        "x2": {"dtype": "float32", "shape": [None, 1]},
    }

    with serving_server() as (base, _):
        status, rows, headers = call(
            base,
            "POST",
            "/v1/models/points:predict",
            {"instances": [{"x1": 2.5, "x2": 9}, {"x1": -2.5, "x2": 0}, {"x1": 0.1, "x2": 4}]},
            tenant_a.raw_key,
        )
        assert status == 200, rows
        assert headers["X-Model-Version"] == str(version.version)
        assert [set(row) for row in rows["predictions"]] == [{"probability", "label"}] * 3
        for row in rows["predictions"]:
            assert 0.0 <= row["probability"] <= 1.0
            assert row["label"] == ("1" if row["probability"] >= 0.5 else "0")
        assert rows["predictions"][0]["probability"] > rows["predictions"][1]["probability"]  # it learned the sign
        status, columns, _ = call(
            base,
            "POST",
            "/v1/models/points:predict",
            {"inputs": {"x1": [2.5, -2.5, 0.1], "x2": [9, 0, 4]}},
            tenant_a.raw_key,
        )
        assert status == 200, columns
        assert columns["outputs"]["probability"] == [row["probability"] for row in rows["predictions"]]
        status, refused, _ = call(
            base, "POST", "/v1/models/points:predict", {"instances": [{"x1": "high", "x2": 1}]}, tenant_a.raw_key
        )
        assert status == 400, refused


# --- serving reads kinds from the manifest -----------------------------------------------------------------------

_STRING_INPUT = {"inputs": {"value": {"dtype": "string", "shape": [None]}}}
_COLUMN_INPUTS = {
    "inputs": {"age": {"dtype": "float32", "shape": [None, 1]}, "city": {"dtype": "string", "shape": [None, 1]}}
}


def _kinds(signature: Signature) -> tuple[bool, tuple[bool, ...], tuple[bool, ...]]:
    """(binary, each input's id-sequence check, each input kept as a column)."""
    return signature.binary, tuple(s.id_sequence for s in signature.inputs), tuple(s.column for s in signature.inputs)


@pytest.mark.parametrize(
    "template, inputs, expected",
    [
        # What serving decided from the template name before manifests carried the kinds.
        ("sequence_ctr", _STRING_INPUT, (True, (True,), (False,))),
        ("text_classifier", _STRING_INPUT, (False, (False,), (False,))),
        ("tabular_classifier", _COLUMN_INPUTS, (False, (False, False), (True, True))),
    ],
)
def test_versions_published_before_the_kinds_existed_are_served_as_before(template, inputs, expected):
    bare = {"template": template, "label_names": ["0", "1"], "signature": {"name": "serving_default", **inputs}}
    assert _kinds(Signature.from_manifest(bare)) == expected
    # As the trainer wrote them then: with the output key, which alone tells the task.
    output = "probability" if expected[0] else "probabilities"
    written = bare | {"signature": bare["signature"] | {"outputs": {output: "..."}}}
    assert _kinds(Signature.from_manifest(written)) == expected
    assert templates.manifest_kinds(written) == {
        "task": templates.get(template).task,
        "input_kind": templates.get(template).input_kind,
    }


def test_the_manifest_kinds_win_over_the_template_name():
    """Serving never asks which template a version came from once the manifest says what it is."""
    manifest = {
        "template": "sequence_ctr",
        "task": "multiclass",
        "input_kind": "text",
        "label_names": ["a", "b", "c"],
        "signature": {"inputs": _STRING_INPUT["inputs"], "outputs": {"probabilities": "..."}},
    }
    assert _kinds(Signature.from_manifest(manifest)) == (False, (False,), (False,))
    unknown = manifest | {"template": "removed_long_ago", "task": "binary", "input_kind": "id_sequence"}
    assert _kinds(Signature.from_manifest(unknown)) == (True, (True,), (False,))


def test_an_old_version_of_an_unregistered_template_cannot_be_served():
    """Without kinds in the manifest and no template to ask, serving refuses (503) rather than guess."""
    with pytest.raises(ValueError, match="not registered"):
        Signature.from_manifest({"template": "removed_long_ago", "signature": _STRING_INPUT})
    with pytest.raises(ValueError, match="unsupported task"):
        Signature.from_manifest({"task": "regression", "input_kind": "columns", "signature": _COLUMN_INPUTS})
