"""Compile a trained model for serving without TensorFlow, and prove it answers as the SavedModel does.

At publish time the Keras model is cut where its preprocessing layers end: the layers before the cut become a
declarative spec that ``training.compiled`` runs in NumPy, the numeric core after it is converted to ONNX
(tf2onnx). The parity gate then runs the exported SavedModel itself and the compiled path on held-out rows of the
job's own validation split plus edge cases of the template's input kind; only a version whose outputs agree
within ``TOLERANCE`` and whose labels agree exactly is served compiled. Any other outcome (an input kind or a
layer with no compiled form, a failed conversion, a failed gate) leaves the version on TensorFlow, with the
reason in its manifest.

This module imports TensorFlow: only the training worker and the ``compile_versions`` command call it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from training import compiled

logger = logging.getLogger(__name__)

TOLERANCE = 1e-5
OPSET = 17
GATE_ROWS = 512  # held-out rows checked (the whole validation split when it is smaller)


class NotCompilable(Exception):
    """The model has a part with no compiled form here; it is served by TensorFlow."""


# --- cutting the model at the end of its preprocessing -------------------------------------------------------


def _input_of(layer: keras.layers.Layer):
    try:
        return layer.input
    except (AttributeError, ValueError):  # a layer called more than once has no single input
        return None


def _first_layer_on(model: keras.Model, tensor) -> keras.layers.Layer:
    """The layer that reads a model input (each input of the built-in templates feeds exactly one)."""
    users = [
        layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer) and _input_of(layer) is tensor
    ]
    if len(users) != 1:
        raise NotCompilable(f"input {tensor.name} feeds {len(users)} layers")
    return users[0]


def _id_sequence_step(layer, column: str, feed: str) -> dict[str, Any]:
    return {
        "kind": "id_sequence",
        "column": column,
        "feed": feed,
        "params": {"max_len": int(layer.max_len), "vocab_size": int(layer.vocab_size)},
    }


def _text_step(layer, column: str, feed: str) -> dict[str, Any]:
    config = layer.get_config()
    if config.get("output_mode") != "int" or config.get("ngrams") or config.get("ragged"):
        raise NotCompilable("text vectorization other than int ids of single tokens")
    split = config.get("split")
    if split not in ("whitespace", None) and "split_characters" not in json.dumps(split, default=str):
        raise NotCompilable(f"text split {split!r}")
    standardize = config.get("standardize")
    if standardize not in (None, "lower", "strip_punctuation", "lower_and_strip_punctuation"):
        raise NotCompilable(f"text standardization {standardize!r}")
    return {
        "kind": "text",
        "column": column,
        "feed": feed,
        "params": {
            "vocabulary": [str(token) for token in layer.get_vocabulary()],
            "standardize": standardize,
            "split": "whitespace" if split in ("whitespace", None) else "characters",
            "sequence_length": int(config["output_sequence_length"]),
        },
    }


def _column_step(layer, column: str, feed: str) -> dict[str, Any]:
    if isinstance(layer, keras.layers.StringLookup):
        config = layer.get_config()
        if config.get("output_mode") != "one_hot" or config.get("num_oov_indices", 1) != 1:
            raise NotCompilable("string lookups other than one-hot with one out-of-vocabulary index")
        vocabulary = [str(token) for token in layer.get_vocabulary()]
        return {"kind": "one_hot", "column": column, "feed": feed, "params": {"vocabulary": vocabulary}}
    if type(layer).__name__ == "Standardize":
        return {
            "kind": "normalize",
            "column": column,
            "feed": feed,
            "params": {"mean": [layer.mean], "variance": [layer.variance], "missing": "mean"},
        }
    if isinstance(layer, keras.layers.Normalization):
        if layer.invert:
            raise NotCompilable("inverted normalization")
        mean = np.asarray(keras.ops.convert_to_numpy(layer.mean), dtype=np.float64).reshape(-1)
        variance = np.asarray(keras.ops.convert_to_numpy(layer.variance), dtype=np.float64).reshape(-1)
        return {
            "kind": "normalize",
            "column": column,
            "feed": feed,
            "params": {"mean": mean.tolist(), "variance": variance.tolist()},
        }
    return {}


def _split(model: keras.Model, input_kind: str) -> tuple[list, list[dict[str, Any]], list[tf.TensorSpec]]:
    """The tensors where the numeric core starts, one step per model input, and the core's input specs."""
    boundaries, steps, specs = [], [], []
    for position, tensor in enumerate(model.inputs):
        column, feed = tensor.name.split(":")[0], f"x{position}"
        layer = _first_layer_on(model, tensor)
        if input_kind == "id_sequence":
            if type(layer).__name__ != "IdSequence":
                raise NotCompilable(f"id_sequence input read by {type(layer).__name__}")
            step, dtype = _id_sequence_step(layer, column, feed), tf.int64
        elif input_kind == "text":
            if not isinstance(layer, keras.layers.TextVectorization):
                raise NotCompilable(f"text input read by {type(layer).__name__}")
            step, dtype = _text_step(layer, column, feed), tf.int64
        elif input_kind == "columns":
            step, dtype = _column_step(layer, column, feed), tf.float32
            if not step:  # a number the core reads as it is
                if tensor.dtype != "float32":
                    raise NotCompilable(f"column {column} ({tensor.dtype}) reaches the core unprocessed")
                step = {"kind": "identity", "column": column, "feed": feed, "params": {}}
                boundaries.append(tensor)
                steps.append(step)
                specs.append(tf.TensorSpec((None, 1), tf.float32, name=feed))
                continue
        else:
            raise NotCompilable(f"no compiled form for input kind {input_kind!r}")
        output = layer.output
        boundaries.append(output)
        steps.append(step)
        specs.append(tf.TensorSpec((None, *output.shape[1:]), dtype, name=feed))
    return boundaries, steps, specs


def to_onnx(model: keras.Model, input_kind: str) -> tuple[bytes, list[dict[str, Any]]]:
    """The numeric core as an ONNX graph (inputs ``x0``, ``x1``, ...) and the preprocessing steps that feed it."""
    import tf2onnx

    boundaries, steps, specs = _split(model, input_kind)
    core = keras.Model(boundaries if len(boundaries) > 1 else boundaries[0], model.output)

    @tf.function(input_signature=specs)
    def numeric_core(*inputs):
        return core(list(inputs) if len(inputs) > 1 else inputs[0], training=False)

    proto, _ = tf2onnx.convert.from_function(numeric_core, input_signature=specs, opset=OPSET)
    names = [node.name for node in proto.graph.input]
    if names != [spec.name for spec in specs]:
        raise NotCompilable(f"the converted graph takes {names}")
    return proto.SerializeToString(), steps


# --- the parity gate ----------------------------------------------------------------------------------------


_TEXT_EDGES = [
    "",
    "   ",
    "Hello, WORLD! It's 42.",
    "混合 text 中文和English mixed 😀🎉 emoji",
    "ÄÖÜ École ΣΊΣΥΦΟΣ",  # non-ASCII capitals: Keras lower-cases ASCII only
    "\u3000全角\u3000空白\xa0nbsp\ttab\nnewline",
    "!!!...???",
    "word " * 400,
]


def _edge_values(step: Mapping[str, Any], typical: Any) -> list[Any]:
    """Request values at the edges of what serving accepts for one input."""
    if step["kind"] == "id_sequence":
        max_len, vocab = step["params"]["max_len"], step["params"]["vocab_size"]
        return [
            "",
            "  ",
            "0",
            str(vocab * 10),
            "999999999999999999",
            " ".join(str(i % (vocab + 3)) for i in range(max_len * 3)),
            f"1 {vocab - 2} {vocab - 1} {vocab}",
        ]
    if step["kind"] == "text":
        return _TEXT_EDGES
    if step["kind"] == "one_hot":
        return ["", "never seen before", "😀", str(typical).upper()]
    return [0.0, -1.0, 1e6, -1e30, float("nan")]


def _request_columns(signature: Mapping[str, Any], values: Mapping[str, list[Any]]) -> dict[str, np.ndarray]:
    """Values per input -> arrays exactly as the serving signature converts request rows."""
    columns = {}
    for name, spec in signature["inputs"].items():
        if spec["dtype"] == "string":
            array = np.empty(len(values[name]), dtype=object)
            array[:] = [str(v).encode("utf-8") for v in values[name]]
        else:
            array = np.asarray(values[name], dtype=np.float32)
        columns[name] = array.reshape(-1, 1) if len(spec["shape"]) == 2 else array
    return columns


def gate_rows(
    features: Mapping[str, np.ndarray], index: np.ndarray, signature: Mapping[str, Any], steps: list[dict[str, Any]]
) -> dict[str, np.ndarray]:
    """Held-out rows (up to ``GATE_ROWS``) followed by edge cases, one input varied at a time."""
    names = list(signature["inputs"])
    held_out = index[:GATE_ROWS]
    values = {name: [_plain(v) for v in features[name][held_out]] for name in names}
    typical = {name: values[name][0] if values[name] else "" for name in names}
    for step in steps:
        for edge in _edge_values(step, typical[step["column"]]):
            for name in names:
                values[name].append(edge if name == step["column"] else typical[name])
    return _request_columns(signature, values)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _labels(scores: np.ndarray, binary: bool) -> np.ndarray:
    return (scores.reshape(-1) >= 0.5) if binary else np.argmax(scores, axis=1)


def parity(
    *,
    saved_model_dir: Path,
    compiled_model: compiled.CompiledModel,
    columns: dict[str, np.ndarray],
    binary: bool,
) -> dict[str, Any]:
    """Runs the SavedModel's ``serving_default`` and the compiled path on the same rows; the gate's report."""
    function = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
    expected = next(iter(function(**{n: tf.constant(v) for n, v in columns.items()}).values())).numpy()
    actual = compiled_model.scores(columns)
    rows = len(expected)
    if actual.shape != expected.shape:
        return {"passed": False, "rows": rows, "reason": f"output shape {actual.shape} vs {expected.shape}"}
    finite = np.isfinite(expected) & np.isfinite(actual)
    same_nan = np.array_equal(np.isnan(expected), np.isnan(actual))
    difference = float(np.max(np.abs(expected[finite] - actual[finite]), initial=0.0))
    labels_agree = int(np.sum(_labels(expected, binary) == _labels(actual, binary)))
    passed = same_nan and difference <= TOLERANCE and labels_agree == rows
    report = {
        "passed": bool(passed),
        "rows": rows,
        "max_abs_difference": difference,
        "tolerance": TOLERANCE,
        "labels_agree": labels_agree,
    }
    if not passed:
        report["reason"] = (
            "outputs differ where one is NaN"
            if not same_nan
            else f"max difference {difference:.3g} > {TOLERANCE}"
            if difference > TOLERANCE
            else f"labels differ on {rows - labels_agree} of {rows} rows"
        )
    return report


# --- publish-time entry point -------------------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def compile_version(
    *,
    model: keras.Model,
    export_dir: Path,
    input_kind: str,
    signature: Mapping[str, Any],
    binary: bool,
    rows: Callable[[list[dict[str, Any]]], dict[str, np.ndarray]],
) -> dict[str, Any]:
    """Write ``compiled/`` into the exported SavedModel's folder when the gate passes; the manifest's fields.

    ``rows(steps)`` gives the gate's request columns (held-out rows and edge cases). On any failure nothing is
    left in ``compiled/`` and the fields say that TensorFlow serves the version, and why.
    """
    folder = export_dir / compiled.FOLDER
    try:
        model_bytes, steps = to_onnx(model, input_kind)
        spec_bytes = compiled.spec_document(steps)
        candidate = compiled.CompiledModel(model_bytes=model_bytes, spec=json.loads(spec_bytes))
        report = parity(saved_model_dir=export_dir, compiled_model=candidate, columns=rows(steps), binary=binary)
    except NotCompilable as exc:
        return {"runtime": compiled.RUNTIME_TENSORFLOW, "runtime_reason": f"not compiled: {exc}"}
    except Exception as exc:  # a converter or runtime failure must never fail the job: TensorFlow serves it
        logger.warning("compiling for serving failed; TensorFlow will serve this version", exc_info=True)
        return {"runtime": compiled.RUNTIME_TENSORFLOW, "runtime_reason": f"compilation failed: {type(exc).__name__}"}
    if not report["passed"]:
        return {
            "runtime": compiled.RUNTIME_TENSORFLOW,
            "runtime_reason": f"parity gate failed: {report['reason']}",
            "parity": report,
        }
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (export_dir / compiled.MODEL_FILE).write_bytes(model_bytes)
    (export_dir / compiled.SPEC_FILE).write_bytes(spec_bytes)
    import onnxruntime

    return {
        "runtime": compiled.RUNTIME_COMPILED,
        "compiled": {
            "format": "onnx",
            "opset": OPSET,
            "onnxruntime_version": onnxruntime.__version__,
            "model": {"file": compiled.MODEL_FILE, "sha256": _sha256(model_bytes), "size": len(model_bytes)},
            "preprocess": {"file": compiled.SPEC_FILE, "sha256": _sha256(spec_bytes), "size": len(spec_bytes)},
        },
        "parity": report,
    }
