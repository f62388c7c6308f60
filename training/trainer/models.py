"""Keras models of the built-in templates, preprocessing inside, so the exported model takes raw values.

This module imports TensorFlow; only the training worker (inside the task) imports it, through the templates'
``build`` functions (``training/templates/``), which decide which builder here a template uses.
"""

from __future__ import annotations

import re
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from training.templates import TABULAR_MAX_CATEGORIES

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


@keras.saving.register_keras_serializable(package="mlplatform")
class IdSequence(keras.layers.Layer):
    """``"12 85 3 9"`` -> the last ``max_len`` ids, shifted by one (0 pads in front).

    Ids past the vocabulary share its last bucket.
    """

    def __init__(self, max_len: int, vocab_size: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_len = max_len
        self.vocab_size = vocab_size

    def call(self, inputs):
        text = tf.reshape(tf.convert_to_tensor(inputs, dtype=tf.string), [-1])
        tokens = tf.strings.split(tf.strings.strip(text))
        ids = tf.strings.to_number(tokens, out_type=tf.int64)
        ids = tf.clip_by_value(ids, 0, self.vocab_size - 2) + 1
        recent = ids[:, -self.max_len :]
        # Pad in front (as keras pad_sequences does), so the most recent ids sit at the last time steps.
        reversed_rows = tf.reverse(recent, axis=[1]).to_tensor(default_value=0, shape=[None, self.max_len])
        return tf.reverse(reversed_rows, axis=[1])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.max_len)

    def get_config(self) -> dict[str, Any]:
        return super().get_config() | {"max_len": self.max_len, "vocab_size": self.vocab_size}


@keras.saving.register_keras_serializable(package="mlplatform")
class MaskedMean(keras.layers.Layer):
    """The mean over a sequence's unmasked steps; a row of padding only (an empty text) averages to zeros.

    Keras' GlobalAveragePooling1D divides by the number of unmasked steps, 0 for an empty text: the Keras model
    answers NaN there while its exported SavedModel answers otherwise, so neither evaluation nor a compiled
    copy could agree with what is served.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            return keras.ops.mean(inputs, axis=1)
        weights = keras.ops.expand_dims(keras.ops.cast(mask, inputs.dtype), -1)
        return keras.ops.sum(inputs * weights, axis=1) / keras.ops.maximum(keras.ops.sum(weights, axis=1), 1.0)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable(package="mlplatform")
class Standardize(keras.layers.Layer):
    """A number column scaled to mean 0 and variance 1 by the training split's statistics; a missing value (NaN)
    becomes the mean, so 0.

    Keras' Normalization passes NaN on, and what a network then makes of it depends on the runtime (TensorFlow's
    oneDNN ReLU turns it into 0, ONNX Runtime's keeps it): a missing value must mean one thing everywhere.
    """

    def __init__(self, mean: float = 0.0, variance: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.mean = float(mean)
        self.variance = float(variance)

    def call(self, inputs):
        inputs = keras.ops.convert_to_tensor(inputs, dtype="float32")
        filled = keras.ops.where(keras.ops.isnan(inputs), self.mean, inputs)
        return (filled - self.mean) / max(self.variance**0.5, keras.config.epsilon())

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return super().get_config() | {"mean": self.mean, "variance": self.variance}


# What Keras' TextVectorization strips with its default standardization ("lower_and_strip_punctuation").
_PUNCTUATION = r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']'


def lower_and_strip_punctuation(text):
    """TextVectorization's default standardization, for the layers and explanations that tokenize as it does."""
    return tf.strings.regex_replace(tf.strings.lower(text), _PUNCTUATION, "")


@keras.saving.register_keras_serializable(package="mlplatform")
class HashedTokens(keras.layers.Layer):
    """Text -> the first ``sequence_length`` tokens, each hashed into ``1 .. buckets`` (0 pads at the end).

    What a private text model reads instead of a vocabulary adapted on the training rows: nothing here is learned
    from the data, so nothing of a row is in the model outside DP-SGD. Standardized and split as
    TextVectorization does by default (lower case, punctuation stripped; words, or characters for CJK text).
    """

    def __init__(self, buckets: int, sequence_length: int, characters: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        self.buckets = buckets
        self.sequence_length = sequence_length
        self.characters = characters

    def tokens(self, inputs) -> tf.RaggedTensor:
        """The tokens of each text, as they are hashed (explanations name them)."""
        text = tf.reshape(tf.convert_to_tensor(inputs, dtype=tf.string), [-1])
        text = lower_and_strip_punctuation(text)
        return split_characters(text) if self.characters else tf.strings.split(text)

    def call(self, inputs):
        tokens = self.tokens(inputs)[:, : self.sequence_length]
        ids = tf.ragged.map_flat_values(tf.strings.to_hash_bucket_fast, tokens, self.buckets) + 1
        return ids.to_tensor(default_value=0, shape=[None, self.sequence_length])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.sequence_length)

    def get_config(self) -> dict[str, Any]:
        return super().get_config() | {
            "buckets": self.buckets,
            "sequence_length": self.sequence_length,
            "characters": self.characters,
        }


@keras.saving.register_keras_serializable(package="mlplatform")
def split_characters(text):
    """Split CJK text into characters (it has no spaces between words), keeping Latin words whole."""
    spaced = tf.strings.regex_replace(
        text, r"([\x{3040}-\x{30ff}\x{3400}-\x{4dbf}\x{4e00}-\x{9fff}\x{ac00}-\x{d7af}])", r" \1 "
    )
    return tf.strings.split(spaced)


def compile_model(model: keras.Model, *, task: str, learning_rate: float) -> keras.Model:
    """Adam with the loss and metrics of the template's task (what the trainer's labels and evaluation expect):
    binary cross-entropy and AUC over one probability, or sparse categorical cross-entropy over class indices."""
    if task == "binary":
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss="binary_crossentropy",
            metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")],
        )
    else:
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
    return model


def sequence_ctr(*, column: str, params: dict[str, Any], vocab_size: int, unroll: bool = False) -> keras.Model:
    """The seed model; ``unroll`` unrolls its LSTM (a private job's per-example gradients are vectorized, and
    ``tf.vectorized_map`` cannot vectorize the loop of a rolled LSTM)."""
    vocab = params["vocab_size"] or vocab_size
    raw = keras.Input(shape=(), dtype="string", name=column)
    ids = IdSequence(params["max_len"], vocab + 2, name="id_sequence")(raw)
    x = keras.layers.Embedding(vocab + 2, params["embedding_dim"], name="embedding")(ids)
    x = keras.layers.Conv1D(params["conv_filters"], params["conv_kernel"], activation="relu", padding="same")(x)
    x = keras.layers.MaxPooling1D(params["pool_size"])(x)
    x = keras.layers.LSTM(params["lstm_units"], unroll=unroll)(x)
    output = keras.layers.Dense(1, activation="sigmoid", name="probability", dtype="float32")(x)
    return compile_model(
        keras.Model(raw, output, name="sequence_ctr"), task="binary", learning_rate=params["learning_rate"]
    )


def text_classifier(
    *, column: str, params: dict[str, Any], texts: np.ndarray, classes: int, private: bool = False
) -> keras.Model:
    """Text to class probabilities. A private job's model (``private``) hashes its tokens instead of adapting a
    vocabulary on the training rows (``HashedTokens``) and unrolls its LSTM (per-example gradients are vectorized,
    and a rolled LSTM's loop is not)."""
    tokenize = params["tokenize"]
    if tokenize == "auto":
        sample = texts[:2000]
        cjk = sum(bool(_CJK.search(t)) for t in sample)
        tokenize = "characters" if cjk >= len(sample) / 2 else "words"
    if private:
        vectorizer = HashedTokens(
            params["max_tokens"], params["sequence_length"], tokenize == "characters", name="vectorizer"
        )
    else:
        vectorizer = keras.layers.TextVectorization(
            max_tokens=params["max_tokens"],
            output_sequence_length=params["sequence_length"],
            split=split_characters if tokenize == "characters" else "whitespace",
            name="vectorizer",
        )
        vectorizer.adapt(tf.constant(list(texts)))
    raw = keras.Input(shape=(), dtype="string", name=column)
    tokens = vectorizer(raw)
    x = keras.layers.Embedding(params["max_tokens"] + 1, params["embedding_dim"], mask_zero=True)(tokens)
    if params["encoder"] == "bilstm":
        x = keras.layers.Bidirectional(keras.layers.LSTM(params["lstm_units"], unroll=private))(x)
    else:
        x = MaskedMean(name="masked_mean")(x)
        x = keras.layers.Dense(params["embedding_dim"], activation="relu")(x)
    output = keras.layers.Dense(classes, activation="softmax", name="probabilities", dtype="float32")(x)
    return compile_model(
        keras.Model(raw, output, name="text_classifier"), task="multiclass", learning_rate=params["learning_rate"]
    )


def tabular_classifier(
    *, columns: dict[str, str], params: dict[str, Any], features: dict[str, np.ndarray], classes: int
) -> keras.Model:
    inputs, encoded = [], []
    for name, column_type in columns.items():
        if column_type == "string":
            raw = keras.Input(shape=(1,), dtype="string", name=name)
            # The most frequent categories only: a column of unique values must not widen the network without bound.
            lookup = keras.layers.StringLookup(
                output_mode="one_hot", max_tokens=TABULAR_MAX_CATEGORIES, name=f"{name}_lookup"
            )
            lookup.adapt(features[name].astype(str))
            encoded.append(lookup(raw))
        else:
            raw = keras.Input(shape=(1,), dtype="float32", name=name)
            values = features[name].astype("float64")
            known = values[~np.isnan(values)]
            mean, variance = (float(known.mean()), float(known.var())) if known.size else (0.0, 1.0)
            encoded.append(Standardize(mean, variance, name=f"{name}_norm")(raw))
        inputs.append(raw)
    x = keras.layers.Concatenate()(encoded) if len(encoded) > 1 else encoded[0]
    for units in params["hidden_units"]:
        x = keras.layers.Dense(units, activation="relu")(x)
        x = keras.layers.Dropout(params["dropout"])(x)
    output = keras.layers.Dense(classes, activation="softmax", name="probabilities", dtype="float32")(x)
    return compile_model(
        keras.Model(inputs, output, name="tabular_classifier"), task="multiclass", learning_rate=params["learning_rate"]
    )
