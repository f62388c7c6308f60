"""A template's Keras model seen as two parts: preprocessing (no weights) and the chain of layers that learn.

Every built-in template turns raw values into numbers first (``IdSequence``, ``TextVectorization``, lookups and
standardization), then runs a single chain of layers with weights to the output. DP-SGD needs the second part
alone, to take one gradient per example over numbers (string ops do not vectorize), and integrated gradients need
it from the embedding's output on (they interpolate between a baseline and the input there). Both re-run the
model's own layers, so they share its weights: nothing here copies a variable.
"""

from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass
from typing import Any

import keras


@dataclass(frozen=True)
class ModelParts:
    """``preprocess`` maps the model's raw inputs to what its first layer with weights takes; ``chain`` are the
    layers from there to the output, each feeding the next."""

    preprocess: keras.Model
    chain: list[keras.layers.Layer]
    # For a model whose preprocessing ends in several tensors (one per tabular column), each one's width and the
    # raw input it came from, in the order the first layer with weights (after their concatenation) reads them.
    widths: list[int]
    sources: list[str]

    def run_chain(self, values, *, start: int = 0, mask=None, training: bool = False):
        """The chain from layer ``start`` on, applied to ``values`` (with a sequence ``mask`` where there is one)."""
        x = values
        for layer in self.chain[start:]:
            x, mask = call_layer(layer, x, mask=mask, training=training)
        return x

    @property
    def embedding(self) -> keras.layers.Embedding | None:
        first = self.chain[0]
        return first if isinstance(first, keras.layers.Embedding) else None


def call_layer(layer, values, *, mask=None, training: bool = False):
    """``layer(values)`` passing the mask and the training flag only to layers that take them; the output's mask."""
    accepted = inspect.signature(layer.call).parameters
    kwargs: dict[str, Any] = {}
    if mask is not None and "mask" in accepted:
        kwargs["mask"] = mask
    if "training" in accepted:
        kwargs["training"] = training
    output = layer(values, **kwargs)
    return output, layer.compute_mask(values, mask) if mask is not None else None


def split(model: keras.Model) -> ModelParts:
    """The model's preprocessing and its chain of layers with weights; ValueError when the model is not of that
    shape (a template whose layers with weights branch), so callers refuse it clearly instead of training or
    explaining something else than what is served."""
    layers = model.layers
    first = next((i for i, layer in enumerate(layers) if layer.trainable_weights), None)
    if first is None:
        raise ValueError(f"model {model.name} has no layer with weights")
    chain = layers[first:]
    for previous, layer in itertools.pairwise(chain):
        inbound = [node.operation for node in _inbound_layers(layer)]
        if inbound != [previous]:
            raise ValueError(f"model {model.name}: {layer.name} does not read {previous.name} alone")
    entry = _inbound_layers(chain[0])
    if len(entry) != 1:
        raise ValueError(f"model {model.name}: {chain[0].name} reads {len(entry)} layers")
    feed = entry[0].operation
    if isinstance(feed, keras.layers.Concatenate):
        parts = list(_inbound_layers(feed))
        tensors = [part.operation.output for part in parts]
        preprocess = keras.Model(model.inputs, tensors, name=f"{model.name}_preprocess")
        widths = [int(t.shape[-1]) for t in tensors]
        sources = [_source(model, part) for part in parts]
        # The concatenation itself has no weights: it belongs to preprocessing, the chain reads its output.
        return ModelParts(_Concatenated(preprocess), chain, widths, sources)
    tensor = feed.output
    preprocess = keras.Model(model.inputs, tensor, name=f"{model.name}_preprocess")
    width = int(tensor.shape[-1]) if tensor.shape[-1] is not None else 1
    return ModelParts(preprocess, chain, [width], [model.inputs[0].name])


class _Concatenated:
    """A preprocessing model ending in one tensor per column, answering their concatenation (what the chain reads)."""

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self.inputs = model.inputs

    def __call__(self, inputs, training: bool = False):
        return keras.ops.concatenate(self.model(inputs, training=training), axis=-1)


def _inbound_layers(layer) -> list[Any]:
    """The layers whose outputs ``layer`` reads (by their history), for a layer called once; the sequence mask it
    is given beside its input (a boolean tensor) is not one of them."""
    (node,) = layer._inbound_nodes
    return [tensor._keras_history for tensor in node.input_tensors if tensor.dtype != "bool"]


def _source(model: keras.Model, history) -> str:
    """The raw input a column's encoding layer reads."""
    layer = history.operation
    (node,) = layer._inbound_nodes
    (tensor,) = node.input_tensors
    name = tensor._keras_history.operation.name
    if name not in {raw._keras_history.operation.name for raw in model.inputs}:
        raise ValueError(f"model {model.name}: {layer.name} does not read a raw input")
    return name
