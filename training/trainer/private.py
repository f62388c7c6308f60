"""DP-SGD: a template's model trained with per-example clipping and Gaussian noise, fed by Poisson sampling.

A private job's plan (``TrainingJob.privacy``, resolved by ``training.privacy`` before the job is created) fixes
everything the accountant assumed: the sampling rate ``q``, the steps per epoch and in all, the noise multiplier
sigma, the clipping bound C and the divisor of the noisy sum (the *expected* batch size). The trainer uses exactly
those, never what the data turns out to be, so the epsilon computed before the job started holds.

One step (``PrivateModel.train_step``):

1. the batch's raw values go through the model's preprocessing (no weights, no gradient: ``graph.split``);
2. one gradient per example over the chain of layers with weights (``tf.vectorized_map``, in chunks whose dense
   per-example gradients fit ``training.privacy.PER_EXAMPLE_GRADIENT_BYTES``), each scaled to L2 norm at most C
   over all variables;
3. their sum plus Gaussian noise of standard deviation sigma*C per coordinate, divided by the expected batch size,
   applied by the job's optimizer.

Noise and sampling come from the operating system's entropy (``tf.random.Generator.from_non_deterministic_state``,
``np.random.default_rng()``), never from the job's seed: someone who knows the seed (it is shown to the tenant and
stored with the job) must not be able to regenerate and subtract the noise, or know which rows a step saw.

The training loss and metrics Keras reports are computed on the batch as usual: they are not private (the tenant
sees them; the privacy statement says they are not covered).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

# The chunk of per-example gradients held at once is training.privacy's: the API's memory estimate uses the same.
from training.privacy import per_example_chunk_rows
from training.trainer import graph
from training.trainer.data import Rows


class _Noise:
    """A random generator seeded from the operating system's entropy, held outside Keras' tracking (it is not a
    weight of the model: a checkpoint or an export must not carry it, and a resumed job draws fresh noise)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.generator: tf.random.Generator | None = None

    def get(self) -> tf.random.Generator:
        with self.lock:
            if self.generator is None:
                with tf.init_scope():  # a variable created while Keras traces the step must live outside the graph
                    self.generator = tf.random.Generator.from_non_deterministic_state()
            return self.generator


class _Settings:
    """The plan's numbers a step uses (a plain object: Keras does not track or save it; the plan is the truth)."""

    def __init__(self, *, clip_norm: float, noise_multiplier: float, expected_batch_size: float) -> None:
        if clip_norm <= 0 or noise_multiplier < 0 or expected_batch_size <= 0:
            raise ValueError("a privacy plan needs clip_norm > 0, noise_multiplier >= 0 and expected_batch_size > 0")
        self.clip_norm = float(clip_norm)
        self.noise_multiplier = float(noise_multiplier)
        self.expected_batch_size = float(expected_batch_size)
        self.noise = _Noise()
        self.parts: graph.ModelParts | None = None


@keras.saving.register_keras_serializable(package="mlplatform")
class PrivateModel(keras.Model):
    """A template's functional model whose ``fit`` does DP-SGD (see the module's docstring).

    Built from the same inputs and outputs as the template's model (``make_private``), so it has the same layers
    and weights; checkpoints save and load it as a functional model of this class. Its DP settings are not saved
    with it: every attempt sets them from the job's plan (``configure``) before training.
    """

    def configure(self, *, clip_norm: float, noise_multiplier: float, expected_batch_size: float) -> None:
        self._dp = _Settings(
            clip_norm=clip_norm, noise_multiplier=noise_multiplier, expected_batch_size=expected_batch_size
        )

    @property
    def dp(self) -> _Settings:
        settings = getattr(self, "_dp", None)
        if settings is None:
            raise RuntimeError("a PrivateModel trains only once configure() has set its privacy plan")
        return settings

    def _parts(self) -> graph.ModelParts:
        if self.dp.parts is None:
            self.dp.parts = graph.split(self)
        return self.dp.parts

    def _example_loss(self, y, y_pred):
        """The compiled loss per example (the templates compile one loss, named by a string)."""
        loss = keras.losses.get(self.loss)
        if len(y_pred.shape) == 2 and y_pred.shape[-1] == 1:  # binary: one probability per row
            y = tf.reshape(tf.cast(y, y_pred.dtype), [-1, 1])
        return loss(y, y_pred)

    def _chunk_rows(self) -> int:
        parameters = sum(int(np.prod(v.shape)) for v in self.trainable_variables)
        return per_example_chunk_rows(parameters=parameters)

    def clipped_gradient_sum(self, x, y):
        """The sum over the batch of each example's gradient (over the chain's variables) scaled to L2 norm at
        most ``clip_norm``; a list in the order of ``trainable_variables``. An empty batch sums to zeros."""
        parts = self._parts()
        variables = self.trainable_variables
        features = tf.stop_gradient(parts.preprocess(x, training=False))
        embedding = parts.embedding
        masked = embedding is not None and bool(getattr(embedding, "mask_zero", False))
        total = tf.shape(features)[0]
        mask = tf.not_equal(features, 0) if masked else tf.zeros([total], tf.bool)
        # Each example's own dropout: drawn here, outside the vectorized map, where a Dropout layer would draw one
        # mask for all the examples it maps over (its seed does not vary across them).
        dropped = {
            index: layer
            for index, layer in enumerate(parts.chain)
            if isinstance(layer, keras.layers.Dropout) and layer.rate > 0
        }
        keeps = [
            tf.cast(tf.random.uniform(tf.concat([[total], layer.output.shape[1:]], 0)) >= layer.rate, tf.float32)
            / (1.0 - layer.rate)
            for layer in dropped.values()
        ]
        clip = tf.constant(self.dp.clip_norm, tf.float32)

        def one(example):
            values, label, row_mask, *row_keeps = example
            keep_of = dict(zip(dropped, row_keeps, strict=True))
            with tf.GradientTape() as tape:
                output, chain_mask = values[None], (row_mask[None] if masked else None)
                for index, layer in enumerate(parts.chain):
                    if index in keep_of:
                        output = output * keep_of[index][None]
                    else:
                        output, chain_mask = graph.call_layer(layer, output, mask=chain_mask, training=True)
                loss = tf.reduce_sum(self._example_loss(label[None], output))
            grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            grads = [tf.convert_to_tensor(g) for g in grads]  # an embedding's IndexedSlices, made dense
            # Not tf.linalg.global_norm: its L2Loss has no vectorized form (pfor would loop over the examples).
            norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads]))
            scale = tf.minimum(1.0, clip / tf.maximum(norm, 1e-12))
            return [g * scale for g in grads]

        chunk = self._chunk_rows()

        def body(start, sums):
            end = tf.minimum(start + chunk, total)
            rows = (features[start:end], y[start:end], mask[start:end], *(k[start:end] for k in keeps))
            per_example = tf.vectorized_map(one, rows)
            return start + chunk, [s + tf.reduce_sum(g, axis=0) for s, g in zip(sums, per_example, strict=True)]

        zeros = [tf.zeros(v.shape, tf.float32) for v in variables]
        _, sums = tf.while_loop(lambda start, _: start < total, body, (tf.constant(0), zeros))
        return sums

    def noisy_gradients(self, x, y):
        """What one DP-SGD step applies: (clipped sum + N(0, (sigma*C)^2) per coordinate) / expected batch size."""
        settings = self.dp
        sums = self.clipped_gradient_sum(x, y)
        std = settings.noise_multiplier * settings.clip_norm
        generator = settings.noise.get()
        return [(s + generator.normal(tf.shape(s), stddev=std)) / settings.expected_batch_size for s in sums]

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        gradients = self.noisy_gradients(x, y)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables, strict=True))
        # Reported to the tenant, not private (the statement says so): the batch's loss and metrics, the model run
        # in inference mode after the step (an empty batch leaves them as they were).
        y_pred = self(x, training=False)
        self._loss_tracker.update_state(self._example_loss(y, y_pred))
        return self.compute_metrics(x, y, y_pred)


def make_private(model: keras.Model, plan: dict[str, Any]) -> PrivateModel:
    """``model`` (a template's compiled functional model, or a checkpoint of a private one) as a configured
    PrivateModel with the same layers, weights and compile settings (a new optimizer when it was not one)."""
    if not isinstance(model, PrivateModel):
        private = PrivateModel(inputs=model.inputs, outputs=model.outputs, name=model.name)
        private.compile_from_config(model.get_compile_config())
        model = private
    graph.split(model)  # refuse a model DP-SGD cannot take apart, before any training
    model.configure(
        clip_norm=float(plan["clip_norm"]),
        noise_multiplier=float(plan["noise_multiplier"]),
        expected_batch_size=float(plan["expected_batch_size"]),
    )
    return model


def functional(model: keras.Model) -> keras.Model:
    """The plain functional model over the same layers (the same weights): what is exported and compiled."""
    if not isinstance(model, PrivateModel):
        return model
    return keras.Model(inputs=model.inputs, outputs=model.outputs, name=model.name)


# --- Poisson sampling -------------------------------------------------------------------------------------------


def poisson_batches(rows: Rows, *, sample_rate: float, steps: int, rng: np.random.Generator) -> Iterator[Rows]:
    """``steps`` batches, each holding every row independently with probability ``sample_rate``: its size drawn
    from Binomial(N, q), then that many distinct rows uniformly (the same distribution, without N draws). A batch
    may be empty (the step then adds noise only)."""
    count = len(rows)
    for _ in range(steps):
        size = int(rng.binomial(count, sample_rate))
        yield rows.take(np.sort(rng.choice(count, size=size, replace=False)))


def sampling_rng() -> np.random.Generator:
    """A generator seeded from the operating system's entropy (never the job's seed)."""
    return np.random.default_rng()


def poisson_dataset(rows: Rows, *, plan: dict[str, Any], first_step: int, to_batch, signature) -> tf.data.Dataset:
    """The training split as ``model.fit`` takes it: each epoch exactly ``steps_per_epoch`` Poisson-sampled
    batches (of varying size, some possibly empty); with ``first_step``, that many fewer (the rest of a resumed
    epoch, which the trainer fits on its own). Its length is known to Keras.

    ``to_batch`` turns Rows into (inputs, labels) as the trainer feeds the template; ``signature`` is their
    ``output_signature``. Every epoch draws afresh from a generator seeded by the operating system.
    """
    steps = int(plan["steps_per_epoch"]) - first_step
    rate = float(plan["sample_rate"])
    rng = sampling_rng()

    def batches():
        for batch in poisson_batches(rows, sample_rate=rate, steps=steps, rng=rng):
            yield to_batch(batch)

    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    return dataset.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(2)
