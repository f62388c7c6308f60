"""``:explain``: a version's SavedModel ``explain`` signature, loaded on first use, and its answer in KServe's shape.

Explaining is integrated gradients exported by the trainer (``training/trainer/explain.py``): about 50 model calls
per instance, in TensorFlow. So it never shares the predictions' path: explainers are loaded (the version's files
fetched and verified, TensorFlow started on first use) and called on their own executor, kept in a small LRU of
their own (``SERVING_EXPLAINERS_MAX``), and each tenant has ``SERVING_EXPLAINS_PER_TENANT`` explanations in flight
in the process (``ExplainSlots``). Versions answered by the compiled runtime keep answering predictions there.

Its memory is bounded by ``SERVING_EXPLAIN_MAX_BYTES``: every instance is 51 rows through the network with a
gradient tape, so the signature is called on chunks of rows whose estimated memory (the manifest's
``explanation.bytes_per_instance``, estimated at publish from the template) stays under it, and a version whose single
instance exceeds it is refused (409) before any TensorFlow work. A version published before that estimate existed
is explained one instance per call (``DEFAULT_ROWS_PER_CALL``), the least memory the signature can take.

The explain signature answers, rows first (the contract of issue 17): ``predictions`` (what ``serving_default``
answers), ``output_index`` (N,), ``instance_output`` (N,), ``baseline_output`` (N,), ``attributions`` (N, P) and
``tokens`` (N, P): what each attribution is of. The answer's predictions are the serving runtime's own (the
compiled one agrees with TensorFlow to ~1e-7, not bit for bit), so they are exactly what :predict answers.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from serving.runtime import loader, protocols
from serving.runtime.http import HTTPError
from serving.runtime.signatures import InputError, Signature

logger = logging.getLogger(__name__)

SIGNATURE = "explain"
OUTPUTS = ("predictions", "output_index", "instance_output", "baseline_output", "attributions", "tokens")
SEQUENCE_UNITS = ("id_position", "token")  # attributions per position of one input; else one per feature column
FAILED_LOAD_RETRY_SECONDS = 5.0
UNAVAILABLE = "explanations_unavailable"
TOO_LARGE = "explanation_too_large"
# A version whose manifest has no memory estimate for its explanation (published before it existed): one instance
# per call, since nothing bounds what an instance needs (the reviewer's case: ~420 MB for one text instance).
DEFAULT_ROWS_PER_CALL = 1


class ExplainerError(Exception):
    """The version's SavedModel has no usable ``explain`` signature although its manifest says it has (503)."""


class ExplainMemoryError(Exception):
    """TensorFlow ran out of memory loading or running the explainer (503: the process's memory is shared and may
    be free again shortly; the request itself was within ``SERVING_EXPLAIN_MAX_BYTES``)."""


def explanation_of(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest's ``explanation`` section, or None for a version published without an explain signature."""
    section = manifest.get("explanation")
    return section if isinstance(section, dict) and section.get("signature") else None


def bytes_per_instance(manifest: dict[str, Any]) -> int | None:
    """The memory one instance's explanation needs (the manifest's estimate), or None when the manifest has none."""
    value = (explanation_of(manifest) or {}).get("bytes_per_instance")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        return None
    return math.ceil(value)


def rows_per_call(manifest: dict[str, Any], *, max_bytes: int) -> int:
    """Instances explained in one call of the signature: as many as fit in ``max_bytes``, at least one."""
    size = bytes_per_instance(manifest)
    if size is None:
        return DEFAULT_ROWS_PER_CALL
    return max(1, max_bytes // size)


def too_large(model_name: str, version: int, manifest: dict[str, Any], *, max_bytes: int) -> HTTPError | None:
    """The refusal (409) of a version one of whose instances alone needs more than ``max_bytes``, else None."""
    size = bytes_per_instance(manifest)
    if size is None or size <= max_bytes:
        return None
    return HTTPError(
        409,
        f"{TOO_LARGE}: explaining one instance of version {version} of {model_name} needs about "
        f"{_mib(size)} MiB of memory; this server allows {_mib(max_bytes)} MiB per explanation call "
        "(SERVING_EXPLAIN_MAX_BYTES). Publish a smaller model (sequence length, embedding or layer widths) to "
        "explain its predictions.",
    )


def _mib(size: int) -> str:
    return f"{size / 2**20:,.0f}" if size >= 2**20 else f"{size / 2**20:.2f}"


def unavailable(model_name: str, version: int) -> HTTPError:
    return HTTPError(
        409,
        f"{UNAVAILABLE}: version {version} of {model_name} was published without an explain signature "
        "(before explanations existed); publish a new version to explain its predictions.",
    )


class Explainer:
    """One version's ``explain`` function: request columns -> the signature's tensors as arrays, checked."""

    def __init__(
        self,
        spec: loader.VersionSpec,
        saved: Any,
        signature: Signature,
        load_seconds: float,
        *,
        rows_per_call: int = DEFAULT_ROWS_PER_CALL,
    ) -> None:
        self.spec = spec
        self.signature = signature
        self.load_seconds = load_seconds
        self.rows_per_call = max(1, rows_per_call)
        self._saved = saved  # keeps the function's variables alive
        name = explanation_of(spec.manifest)["signature"]
        function = saved.signatures.get(name)
        if function is None:
            raise ExplainerError(f"{spec.label}: the SavedModel has no {name!r} signature")
        _, specs = function.structured_input_signature
        if set(specs) != set(signature.input_names):
            raise ExplainerError(
                f"{spec.label}: {name!r} takes {sorted(specs)}, the manifest says {signature.input_names}"
            )
        missing = set(OUTPUTS) - set(function.structured_outputs)
        if missing:
            raise ExplainerError(f"{spec.label}: {name!r} does not answer {sorted(missing)}")
        self._function = function

    def explain(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The signature on ``rows_per_call`` rows at a time (its memory grows with the rows), answers joined."""
        rows = self.signature.rows_of(columns)
        step = self.rows_per_call
        parts = [
            self._call({name: values[start : start + step] for name, values in columns.items()})
            for start in range(0, rows, step)
        ]
        try:
            arrays = {name: np.concatenate([part[name] for part in parts]) for name in OUTPUTS}
        except ValueError:  # chunks answered different widths
            raise ExplainerError(
                f"{self.spec.label}: the explain signature answered tensors of unexpected shapes"
            ) from None
        attributions = arrays["attributions"]
        if (
            attributions.ndim != 2
            or attributions.shape[0] != rows
            or arrays["tokens"].shape != attributions.shape
            or any(arrays[name].reshape(-1).shape[0] != rows for name in OUTPUTS[1:4])
            or len(arrays["predictions"]) != rows
        ):
            raise ExplainerError(f"{self.spec.label}: the explain signature answered tensors of unexpected shapes")
        return arrays

    def _call(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        tensors = {name: tf.constant(values) for name, values in columns.items()}
        try:
            raw = self._function(**tensors)
            arrays = {name: raw[name].numpy() for name in OUTPUTS}
        except tf.errors.InvalidArgumentError as exc:
            raise InputError(f"The model rejected the input: {exc.message.splitlines()[0][:300]}") from None
        except tf.errors.ResourceExhaustedError as exc:
            raise ExplainMemoryError(f"{self.spec.label}: out of memory explaining: {exc.message[:300]}") from None
        except tf.errors.OpError as exc:  # the version's graph failing: not the request's fault, not a server bug
            raise ExplainerError(f"{self.spec.label}: the explain signature failed: {exc.message[:300]}") from None
        rows = [arrays[name].shape[:1] for name in OUTPUTS]
        if (
            any(count != rows[0] for count in rows)
            or arrays["attributions"].ndim != 2
            or arrays["tokens"].shape != arrays["attributions"].shape
        ):
            raise ExplainerError(f"{self.spec.label}: the explain signature answered tensors of unexpected shapes")
        return arrays


def load_explainer(spec: loader.VersionSpec, *, max_bytes: int) -> Explainer:
    """Fetch all of the version's files (verified against the manifest), start TensorFlow, load the SavedModel.

    Storage failures surface as ``loader.StorageUnavailable`` (503), TensorFlow's out-of-memory as
    ``ExplainMemoryError`` (503) and any other TensorFlow failure to load as ``ExplainerError`` (503).
    """
    started = time.monotonic()
    folder = loader.fetch(spec)
    loader.start_tensorflow()
    import tensorflow as tf

    try:
        saved = tf.saved_model.load(str(folder))
    except tf.errors.ResourceExhaustedError as exc:
        raise ExplainMemoryError(f"{spec.label}: out of memory loading the explainer: {exc.message[:300]}") from None
    except tf.errors.OpError as exc:
        raise ExplainerError(f"{spec.label}: the SavedModel could not be loaded: {exc.message[:300]}") from None
    signature = Signature.from_manifest(spec.manifest)
    explainer = Explainer(spec, saved, signature, 0.0, rows_per_call=rows_per_call(spec.manifest, max_bytes=max_bytes))
    explainer.explain(explainer.signature.example_batch())  # traces the function now, not on a tenant's request
    explainer.load_seconds = time.monotonic() - started
    logger.info("loaded the explainer of %s in %.2f s", spec.label, explainer.load_seconds)
    return explainer


class Explainers:
    """The explainers loaded in this process: at most ``max_count``, least recently used unloaded first.

    Used from the explain executor's threads only; a lock makes a version load once however many wait for it
    (loads are rare and explanations are serialised on few threads anyway). A failed load is remembered for a
    few seconds, so a bad version costs one download per ``FAILED_LOAD_RETRY_SECONDS``, not one per request.
    """

    def __init__(
        self,
        *,
        max_count: int,
        max_bytes: int,
        load: Callable[..., Explainer] = load_explainer,
        on_unload: Callable[[tuple[str, str, int]], None] | None = None,
    ) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes  # the memory one call of a signature may take (``rows_per_call``)
        self._load = load
        self._on_unload = on_unload
        self._entries: OrderedDict[tuple[str, str, int], Explainer] = OrderedDict()
        self._failed: dict[tuple[str, str, int], tuple[float, BaseException]] = {}
        self._lock = threading.Lock()
        self._keys: tuple[tuple[str, str, int], ...] = ()  # replaced whole after each change: safe to read anywhere
        self.loads = 0

    def keys(self) -> tuple[tuple[str, str, int], ...]:
        """The versions with an explainer loaded now (read from the event loop without waiting for a load)."""
        return self._keys

    def get(self, spec: loader.VersionSpec) -> Explainer:
        with self._lock:
            explainer = self._entries.get(spec.key)
            if explainer is not None:
                self._entries.move_to_end(spec.key)
                return explainer
            failed = self._failed.get(spec.key)
            if failed is not None and failed[0] > time.monotonic():
                raise failed[1]
            try:
                with loader.in_use(spec.key):  # its folder is never pruned while it is fetched and loaded
                    explainer = self._load(spec, max_bytes=self.max_bytes)
            except Exception as exc:
                self._failed[spec.key] = (time.monotonic() + FAILED_LOAD_RETRY_SECONDS, exc)
                raise
            self._failed.pop(spec.key, None)
            self.loads += 1
            self._entries[spec.key] = explainer
            while len(self._entries) > self.max_count:
                key, evicted = self._entries.popitem(last=False)
                logger.info("unloaded the explainer of %s (least recently used)", evicted.spec.label)
                if self._on_unload is not None:
                    self._on_unload(key)
            self._keys = tuple(self._entries)
            return explainer

    def explain(self, spec: loader.VersionSpec, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """What the explain executor runs: the version's explainer (loaded if needed) on one request's rows."""
        return self.get(spec).explain(columns)


class ExplainSlots:
    """Explanations in flight in this process: ``per_tenant`` for each tenant (429 beyond), ``total`` in all (503).

    Taken before the body is read, so a tenant explaining as fast as it can holds at most its own slots and the
    explain executor's queue stays short; other tenants' explanations and everyone's predictions are not held up.
    """

    def __init__(self, *, per_tenant: int, total: int) -> None:
        self.per_tenant = per_tenant
        self.total = total
        self._held: dict[str, int] = {}
        self._total = 0

    @property
    def in_flight(self) -> int:
        return self._total

    @contextmanager
    def slot(self, tenant_id: str) -> Iterator[None]:
        held = self._held.get(tenant_id, 0)
        if held >= self.per_tenant:
            raise HTTPError(
                429,
                f"This tenant already has {self.per_tenant} explanations in progress; wait for their answers.",
                headers={"Retry-After": "1"},
            )
        if self._total >= self.total:
            raise HTTPError(503, "The server is busy explaining; retry shortly.", headers={"Retry-After": "2"})
        self._held[tenant_id] = held + 1
        self._total += 1
        try:
            yield
        finally:
            self._total -= 1
            left = self._held[tenant_id] - 1
            if left:
                self._held[tenant_id] = left
            else:
                del self._held[tenant_id]


def explain_response(
    arrays: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    parsed: protocols.Parsed,
    signature: Signature,
    manifest: dict[str, Any],
) -> dict[str, Any]:
    """KServe v1's explainer answer: ``predictions`` exactly as :predict answers them (``outputs``: what the
    version's serving runtime answered for these rows, through the same response builder), then one explanation
    per instance with Vertex-style attributions from the explain signature's tensors (``arrays``);
    ``approximation_error`` is |sum(attributions) - (output - baseline)| over every attribution (padding included:
    it is part of the sum the method guarantees).
    """
    predictions = protocols.tfserving_response(outputs, parsed)
    served = outputs[signature.output_names[0]]
    explained = signature.decode_outputs(arrays["predictions"])[signature.output_names[0]]
    if served.shape == explained.shape and not np.allclose(served, explained, atol=1e-4):
        logger.warning("the explain and serving signatures disagree by %.2g", float(np.abs(served - explained).max()))
    unit = (explanation_of(manifest) or {}).get("unit")
    output_name = signature.output_names[0]
    labels = signature.label_names
    column = signature.input_names[0]
    explanations = []
    for row in range(parsed.rows):
        index = int(arrays["output_index"].reshape(-1)[row])
        baseline = float(arrays["baseline_output"].reshape(-1)[row])
        value = float(arrays["instance_output"].reshape(-1)[row])
        values = arrays["attributions"][row].astype(np.float64)
        tokens = [_text(token) for token in arrays["tokens"][row]]
        if unit in SEQUENCE_UNITS:
            features: dict[str, Any] = {
                column: [
                    {"position": position, "token": token, "attribution": float(values[position])}
                    for position, token in enumerate(tokens)
                    if token != ""
                ]
            }
        else:
            features = {token: float(attribution) for token, attribution in zip(tokens, values, strict=True)}
        explanations.append(
            {
                "attributions": [
                    {
                        "output_name": output_name,
                        "output_index": index,
                        "output_display_name": _display_name(labels, index, binary=signature.binary),
                        "baseline_output_value": baseline,
                        "instance_output_value": value,
                        "feature_attributions": features,
                        "approximation_error": abs(float(values.sum()) - (value - baseline)),
                    }
                ]
            }
        )
    return {**predictions, "explanations": explanations}


def _display_name(labels: tuple[str, ...], index: int, *, binary: bool) -> str:
    """The explained output's label: a binary model's one probability is of its last label."""
    if binary:
        return labels[-1] if labels else "1"
    return labels[index] if 0 <= index < len(labels) else str(index)


def _text(token: Any) -> str:
    return token.decode("utf-8", errors="replace") if isinstance(token, bytes) else str(token)
