"""Explanations exported with every version: integrated gradients in an ``explain`` signature of the SavedModel.

Integrated gradients (Sundararajan et al., 2017) attribute the change of one output, from its value at a baseline
to its value at the input, to the input's parts: the path integral of the output's gradient along the straight line
from the baseline to the input, times the input's difference from the baseline. Summed over the parts, the
attributions equal that change (completeness) up to the error of the integral's approximation, which the answer
reports. The integral is taken with the trapezoidal rule over ``STEPS`` intervals.

Where the integral is taken, so that the parts mean something to a person:

- id sequences: at the embedding's output, summed over the embedding's width, one attribution per id position;
  the baseline is the empty history (every position the padding id), so positions of padding get exactly 0;
- text: at the embedding's output, one attribution per token; the baseline puts the zero vector at every token
  (the sequence mask of the input is kept), the usual baseline for text;
- columns: at the encoded columns (standardized numbers, one-hot categories), summed per column; the baseline is
  every number at its training mean and no category for categorical columns.

The explained output is the model's one probability for a binary model, else the most probable class.

The ``explain`` endpoint sits beside ``serve`` in the same SavedModel (TensorFlow Serving exposes it as the
signature ``explain``), so the served version and its explanations can never come from different weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from training.trainer import graph, models

STEPS = 50
ENDPOINT = "explain"
ROWS_PER_CALL = 16  # instances interpolated together at most (each is STEPS + 1 rows through the network)
BYTES_PER_CALL = 256 * 2**20  # and at most this much memory for them (global explanations on the worker)
GLOBAL_ROWS = 256  # validation rows the global explanation averages over
GLOBAL_TOP = 20

_UNITS = {"id_sequence": "id_position", "text": "token", "columns": "feature"}
_BASELINES = {
    "id_sequence": "the empty history: every position holds the padding id",
    "text": "the zero vector at every token of the input (its mask kept)",
    "columns": "every number at its training mean, no category for categorical columns",
}
_ATTRIBUTED_AT = {
    "id_sequence": "the embedding's output, summed over its width",
    "text": "the embedding's output, summed over its width",
    "columns": "the encoded columns (standardized numbers, one-hot categories), summed per column",
}


class Explainer:
    """Integrated gradients of one Keras model, as TensorFlow ops (traced into the SavedModel's ``explain``)."""

    def __init__(self, model: keras.Model, *, input_kind: str, binary: bool) -> None:
        self.model = model
        self.input_kind = input_kind
        self.binary = binary
        self.parts = graph.split(model)
        if input_kind != "columns" and self.parts.embedding is None:
            raise ValueError(f"model {model.name}: a {input_kind} model must start its chain with an embedding")

    def describe(self) -> dict[str, Any]:
        """What the manifest says about the ``explain`` signature."""
        return {
            "signature": ENDPOINT,
            "method": "integrated_gradients",
            "steps": STEPS,
            "rule": "trapezoidal",
            "baseline": _BASELINES[self.input_kind],
            "attributed_at": _ATTRIBUTED_AT[self.input_kind],
            "unit": _UNITS[self.input_kind],
            "output": "the probability" if self.binary else "the probability of the most probable class",
        }

    def __call__(self, inputs) -> dict[str, tf.Tensor]:
        predictions = self.model(inputs, training=False)
        index = (
            tf.zeros(tf.shape(predictions)[:1], tf.int32)
            if self.binary
            else tf.argmax(predictions, axis=-1, output_type=tf.int32)
        )
        values, baseline, head = self._path(inputs)
        attributions, instance, at_baseline = _integrated_gradients(values, baseline, head, index)
        if self.input_kind == "columns":
            width = len(self.parts.widths)
            segments = np.repeat(np.arange(width), self.parts.widths)
            attributions = tf.transpose(tf.math.segment_sum(tf.transpose(attributions), segments))
        else:
            width = int(values.shape[1])  # positions: max_len ids, or sequence_length tokens
            attributions = tf.reduce_sum(attributions, axis=-1)
        attributions = tf.ensure_shape(attributions, [None, width])
        return {
            "predictions": predictions,
            "output_index": index,
            "instance_output": instance,
            "baseline_output": at_baseline,
            "attributions": attributions,
            "tokens": self._tokens(inputs, tf.shape(attributions), width),
        }

    def _path(self, inputs):
        """(the input where attributions are taken, its baseline, the network from there to the output)."""
        parts = self.parts
        encoded = parts.preprocess(inputs)
        if self.input_kind == "columns":
            values = tf.cast(encoded, tf.float32)
            return values, tf.zeros_like(values), lambda v, repeats: parts.run_chain(v)
        embedding = parts.embedding
        values = embedding(encoded)
        mask = embedding.compute_mask(encoded)
        # Ids: the padding id's row at every position (the empty history). Text: zeros, the mask kept.
        empty = self.input_kind == "id_sequence"
        baseline = embedding(tf.zeros_like(encoded)) if empty else tf.zeros_like(values)

        def head(v, repeats):
            rows_mask = None if mask is None else tf.repeat(mask, repeats, axis=0)
            return parts.run_chain(v, start=1, mask=rows_mask)

        return values, baseline, head

    def _tokens(self, inputs, shape: tf.Tensor, width: int) -> tf.Tensor:
        """What each attribution is of (strings, shaped like the attributions)."""
        if self.input_kind == "columns":
            names = tf.constant(self.parts.sources)
            return tf.broadcast_to(names, shape)
        raw = tf.reshape(tf.convert_to_tensor(inputs), [-1])
        if self.input_kind == "id_sequence":
            # As IdSequence reads them: the last max_len ids, padding in front.
            recent = tf.strings.split(tf.strings.strip(raw))[:, -width:]
            padded = tf.reverse(recent, axis=[1]).to_tensor(default_value="", shape=[None, width])
            return tf.reverse(padded, axis=[1])
        vectorizer = self.parts.preprocess.layers[-1]
        # A private model's HashedTokens says what it hashes; a TextVectorization is read as Keras runs it.
        tokens = vectorizer.tokens(raw) if hasattr(vectorizer, "tokens") else _vectorizer_tokens(vectorizer, raw)
        return tokens[:, :width].to_tensor(default_value="", shape=[None, width])


def _vectorizer_tokens(vectorizer, raw: tf.Tensor) -> tf.RaggedTensor:
    """The tokens a TextVectorization layer looks up, before the lookup: its standardization, then its split."""
    text = raw
    standardize = vectorizer._standardize
    if standardize == "lower_and_strip_punctuation":
        text = models.lower_and_strip_punctuation(text)
    elif standardize == "lower":
        text = tf.strings.lower(text)
    elif callable(standardize):
        text = standardize(text)
    split = vectorizer._split
    if split == "whitespace":
        return tf.strings.split(text)
    if split == "character":
        return tf.strings.unicode_split(text, "UTF-8")
    if callable(split):
        return split(text)
    return tf.RaggedTensor.from_tensor(tf.expand_dims(text, -1))


def _integrated_gradients(values, baseline, head, index):
    """(attributions shaped like ``values``, the output at the input, the output at the baseline) per row."""
    rows = tf.shape(values)[0]
    alphas = tf.linspace(0.0, 1.0, STEPS + 1)
    extra = tf.rank(values) - 1
    alpha_shape = tf.concat([[1, STEPS + 1], tf.ones([extra], tf.int32)], axis=0)
    difference = values - baseline
    # (rows, steps + 1, ...) -> (rows * (steps + 1), ...): every instance's path goes through the network at once.
    path = tf.expand_dims(baseline, 1) + tf.reshape(alphas, alpha_shape) * tf.expand_dims(difference, 1)
    flat = tf.reshape(path, tf.concat([[rows * (STEPS + 1)], tf.shape(values)[1:]], axis=0))
    chosen = tf.repeat(index, STEPS + 1)
    with tf.GradientTape() as tape:
        tape.watch(flat)
        outputs = head(flat, STEPS + 1)
        picked = tf.gather(outputs, chosen, axis=1, batch_dims=1)
    gradients = tf.reshape(tape.gradient(picked, flat), tf.shape(path))
    weights = tf.concat([[0.5], tf.ones([STEPS - 1]), [0.5]], axis=0) / STEPS
    average = tf.reduce_sum(gradients * tf.reshape(weights, alpha_shape), axis=1)
    picked = tf.reshape(picked, [rows, STEPS + 1])
    return difference * average, picked[:, -1], picked[:, 0]


def export(model: keras.Model, export_dir: Path, *, explainer: Explainer | None) -> None:
    """Write the SavedModel: ``serve`` (``serving_default``, what ``model.export`` writes) and, with an
    explainer, ``explain`` beside it."""
    if explainer is None:
        model.export(str(export_dir), format="tf_saved_model", verbose=False)
        return
    # The input signature model.export itself uses (Keras' own helper: 3.15 exports it under keras.src only).
    from keras.src.export.export_utils import get_input_signature

    signature = get_input_signature(model)
    archive = keras.export.ExportArchive()
    archive.track_and_add_endpoint("serve", model, signature)
    archive.add_endpoint(ENDPOINT, tf.function(lambda *inputs: explainer(*inputs)), signature)
    archive.write_out(str(export_dir), verbose=False)


def explainer_for(model: keras.Model, *, input_kind: str, binary: bool) -> tuple[Explainer | None, str]:
    """The model's explainer, or None and why not (a template whose layers with weights branch)."""
    try:
        return Explainer(model, input_kind=input_kind, binary=binary), ""
    except ValueError as exc:
        return None, str(exc)


def bytes_per_instance(activations_per_example: int) -> int:
    """Memory one instance's explanation takes: ``STEPS + 1`` rows through the network, each with its activations
    and their gradients (float32)."""
    return (STEPS + 1) * activations_per_example * 4 * 2


def rows_per_call(per_instance: int, budget: int = BYTES_PER_CALL) -> int:
    """Instances explained in one call within ``budget`` bytes (at least one, at most ``ROWS_PER_CALL``)."""
    return max(1, min(ROWS_PER_CALL, budget // max(per_instance, 1)))


def global_explanations(explainer: Explainer, inputs, *, rows: int, per_call: int = ROWS_PER_CALL) -> dict[str, Any]:
    """Mean absolute attributions over the first ``rows`` validation rows (``inputs`` as the model takes them):
    per feature column, or per id / token (over all its positions), the largest ``GLOBAL_TOP`` first.

    ``mean_abs_attribution`` is the average over the rows examined of the part's absolute attributions in a
    row (0 in rows without it), so a part that is rare but decisive and one that is common and mild compare on
    one scale; ``count`` says how often an id or token occurred.
    """
    function = tf.function(explainer.__call__)
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    for start in range(0, rows, per_call):
        chunk = _take(inputs, slice(start, min(start + per_call, rows)))
        answer = function(chunk)
        magnitudes = np.abs(answer["attributions"].numpy())
        for token, magnitude in zip(answer["tokens"].numpy().ravel(), magnitudes.ravel(), strict=True):
            if not token:
                continue  # padding
            name = token.decode("utf-8", "replace")
            totals[name] = totals.get(name, 0.0) + float(magnitude)
            counts[name] = counts.get(name, 0) + 1
    ranked = sorted(totals, key=lambda name: (-totals[name], name))[:GLOBAL_TOP]
    return {
        "method": f"mean absolute integrated-gradients attribution over {rows} validation rows",
        "rows": rows,
        "unit": _UNITS[explainer.input_kind],
        "top": [
            {"feature": name, "mean_abs_attribution": round(totals[name] / max(rows, 1), 6), "count": counts[name]}
            for name in ranked
        ],
    }


def _take(inputs, index):
    if isinstance(inputs, dict):
        return {name: tf.constant(values[index]) for name, values in inputs.items()}
    return tf.constant(inputs[index])
