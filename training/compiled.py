"""A published version's compiled form: its preprocessing as declarative NumPy steps, its numeric core as ONNX.

The trainer writes both beside the SavedModel at publish time (``training/trainer/compile.py``) and checks them
against it (the parity gate); the serving process runs them without TensorFlow. Both sides use this module, so
the preprocessing that passed the gate is, line for line, the one that serves.

No TensorFlow here, and ONNX Runtime is imported only when a session is created.

The spec (``compiled/preprocess.json``) lists one step per model input. Each step reads one request column (as
the serving signature converts it: UTF-8 bytes or floats, one per row, or a ``(rows, 1)`` column) and writes one
input of the ONNX graph (``feed``). Kinds:

- ``id_sequence``: ``"12 85 3"`` -> int64 ``(rows, max_len)``: ids clipped to ``[0, vocab_size - 2]`` and
  shifted by one, the last ``max_len`` kept, zeros padded in front (Keras' ``pad_sequences`` layout).
- ``text``: standardized (ASCII lower-casing and punctuation stripping, as Keras' ``TextVectorization`` does),
  split on ASCII whitespace, after spacing out CJK characters when ``split`` is ``characters``, looked up in
  ``vocabulary`` (index 0 pads, 1 is out of vocabulary), the first ``sequence_length`` tokens kept, zeros after.
- ``one_hot``: a category -> float32 one-hot over ``vocabulary`` (index 0 is out of vocabulary).
- ``normalize``: a number -> float32 ``(x - mean) / max(sqrt(variance), 1e-7)``; with ``missing: mean``, NaN is
  taken as the mean first (so 0).
- ``identity``: a number passed through as float32.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

FORMAT = 1
FOLDER = "compiled"
MODEL_FILE = f"{FOLDER}/model.onnx"
SPEC_FILE = f"{FOLDER}/preprocess.json"
RUNTIME_COMPILED = "onnxruntime"
RUNTIME_TENSORFLOW = "tensorflow"

# Keras' TextVectorization: DEFAULT_STRIP_REGEX, and tf.strings.lower (ASCII letters only).
_PUNCTUATION = re.compile(r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']')
_ASCII_UPPER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
# tf.strings.split without a separator splits on ASCII whitespace only (not on U+3000 or U+00A0).
_WHITESPACE = re.compile(r"[ \t\n\v\f\r]+")
# training/trainer/models.split_characters: CJK characters become tokens of their own.
_CJK = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af])")
_EPSILON = 1e-7  # keras.config.epsilon(), Normalization's floor on the standard deviation


class SpecError(ValueError):
    """A preprocessing spec this version of the platform cannot run (the version is served by TensorFlow)."""


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _tokens(text: str) -> list[str]:
    return [token for token in _WHITESPACE.split(text) if token]


def _rows(values: np.ndarray) -> np.ndarray:
    """One value per row, whether the request column came as ``(rows,)`` or ``(rows, 1)``."""
    return values.reshape(len(values), -1)[:, 0] if values.ndim > 1 else values


@dataclass(frozen=True)
class Step:
    """One model input's preprocessing (see the module docstring for the kinds)."""

    kind: str
    column: str
    feed: str
    params: Mapping[str, Any]

    def __post_init__(self) -> None:
        if self.kind not in _TRANSFORMS:
            raise SpecError(f"unknown preprocessing kind {self.kind!r}")
        if self.kind in {"text", "one_hot"}:
            vocabulary = list(self.params["vocabulary"])
            object.__setattr__(self, "_index", {token: i for i, token in enumerate(vocabulary)})

    def apply(self, values: np.ndarray) -> np.ndarray:
        return _TRANSFORMS[self.kind](self, _rows(values))


def _id_sequence(step: Step, values: np.ndarray) -> np.ndarray:
    max_len, last = int(step.params["max_len"]), int(step.params["vocab_size"]) - 2
    out = np.zeros((len(values), max_len), dtype=np.int64)
    for row, value in enumerate(values):
        # bytes.split() splits on ASCII whitespace only, as tf.strings.split does (serving sends UTF-8 bytes).
        tokens = value.split() if isinstance(value, bytes) else _tokens(str(value))
        if tokens:
            recent = tokens[-max_len:]
            out[row, max_len - len(recent) :] = [min(max(int(token), 0), last) + 1 for token in recent]
    return out


def _standardize(text: str, how: str | None) -> str:
    if how in {"lower", "lower_and_strip_punctuation"}:
        text = text.translate(_ASCII_UPPER)
    if how in {"strip_punctuation", "lower_and_strip_punctuation"}:
        text = _PUNCTUATION.sub("", text)
    return text


def _text_ids(step: Step, values: np.ndarray) -> np.ndarray:
    length, index = int(step.params["sequence_length"]), step._index  # type: ignore[attr-defined]
    how, characters = step.params.get("standardize"), step.params.get("split") == "characters"
    out = np.zeros((len(values), length), dtype=np.int64)
    for row, value in enumerate(values):
        text = _standardize(_text(value), how)
        if characters:
            text = _CJK.sub(r" \1 ", text)
        ids = [index.get(token, 1) for token in _tokens(text)[:length]]
        out[row, : len(ids)] = ids
    return out


def _one_hot(step: Step, values: np.ndarray) -> np.ndarray:
    index = step._index  # type: ignore[attr-defined]
    out = np.zeros((len(values), len(index)), dtype=np.float32)
    out[np.arange(len(values)), [index.get(_text(value), 0) for value in values]] = 1.0
    return out


def _normalize(step: Step, values: np.ndarray) -> np.ndarray:
    mean = np.asarray(step.params["mean"], dtype=np.float32).reshape(1, -1)
    std = np.maximum(np.sqrt(np.asarray(step.params["variance"], dtype=np.float32)), _EPSILON).reshape(1, -1)
    values = values.astype(np.float32).reshape(-1, 1)
    if step.params.get("missing") == "mean":
        values = np.where(np.isnan(values), mean, values)
    return (values - mean) / std


def _identity(step: Step, values: np.ndarray) -> np.ndarray:
    return values.astype(np.float32).reshape(-1, 1)


_TRANSFORMS = {
    "id_sequence": _id_sequence,
    "text": _text_ids,
    "one_hot": _one_hot,
    "normalize": _normalize,
    "identity": _identity,
}


@dataclass(frozen=True)
class Preprocessor:
    steps: tuple[Step, ...]

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Preprocessor:
        if spec.get("format") != FORMAT:
            raise SpecError(f"preprocessing spec format {spec.get('format')!r}; this platform runs {FORMAT}")
        return cls(
            steps=tuple(
                Step(kind=s["kind"], column=s["column"], feed=s["feed"], params=s.get("params", {}))
                for s in spec["steps"]
            )
        )

    def feeds(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Request columns (input name -> array, rows first) -> the ONNX graph's inputs."""
        return {step.feed: step.apply(columns[step.column]) for step in self.steps}


def spec_document(steps: list[dict[str, Any]]) -> bytes:
    return json.dumps({"format": FORMAT, "steps": steps}, ensure_ascii=False, sort_keys=True).encode()


def compiled_files(manifest: Mapping[str, Any]) -> tuple[str, str] | None:
    """The (ONNX model, preprocessing spec) files of a version that serves compiled, else None (TensorFlow)."""
    section = manifest.get("compiled") or {}
    if manifest.get("runtime") != RUNTIME_COMPILED or section.get("format") != "onnx":
        return None
    names = (str((section.get("model") or {}).get("file")), str((section.get("preprocess") or {}).get("file")))
    return names if all(name in (manifest.get("files") or {}) for name in names) else None


def serving_runtime(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Which runtime answers for a version and why, as the registry API shows it."""
    if compiled_files(manifest):
        return {"runtime": RUNTIME_COMPILED, "reason": "passed the parity gate", "parity": manifest.get("parity")}
    reason = manifest.get("runtime_reason") or "published before compiled serving (manage.py compile_versions)"
    return {"runtime": RUNTIME_TENSORFLOW, "reason": reason, "parity": manifest.get("parity")}


def session_providers() -> list[str]:
    """CUDA where ONNX Runtime has it (a GPU serving host), else the CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class CompiledModel:
    """The preprocessing spec and the ONNX core of one version, called like the SavedModel's ``serving_default``.

    One intra-op thread per session: serving runs many small models and small batches, where a session's own
    thread pool costs more in wake-ups and memory than it gives; parallelism comes from batches running side by
    side (and from ``serve_models --workers``). The memory arena is off so an idle session keeps no pool of
    its own: many tenants' models fit in one process.
    """

    def __init__(self, *, model_bytes: bytes, spec: Mapping[str, Any], threads: int = 1) -> None:
        import onnxruntime as ort

        self.preprocessor = Preprocessor.from_spec(spec)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.enable_cpu_mem_arena = False
        options.log_severity_level = 3
        self.session = ort.InferenceSession(model_bytes, options, providers=session_providers())
        self.output = self.session.get_outputs()[0].name
        expected = {i.name for i in self.session.get_inputs()}
        fed = {step.feed for step in self.preprocessor.steps}
        if expected != fed:
            raise SpecError(f"the ONNX graph takes {sorted(expected)}, the spec feeds {sorted(fed)}")

    def scores(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """The model's output for a batch of request columns (what ``serving_default`` returns)."""
        return self.session.run([self.output], self.preprocessor.feeds(columns))[0]
