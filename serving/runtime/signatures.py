"""A model version's inputs and outputs, and the checks that turn request rows into its tensors.

No TensorFlow here: the signature is read from the manifest and the loaded
function's input specs as plain names, dtypes and shapes, so the request
parsers and the batcher work on numpy arrays only.

What the output means (``task``) and how requests are checked (``input_kind``)
come from the manifest, where the trainer writes its template's declarations;
serving never asks which template a version was trained from.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.templates import manifest_kinds


class InputError(Exception):
    """The request does not fit the model's signature (answered 400 with this message)."""


_NUMPY_DTYPES = {
    "string": np.object_,
    "float32": np.float32,
    "float64": np.float64,
    "int32": np.int32,
    "int64": np.int64,
}
_TF_DTYPE_NAMES = {
    "string": "DT_STRING",
    "float32": "DT_FLOAT",
    "float64": "DT_DOUBLE",
    "int32": "DT_INT32",
    "int64": "DT_INT64",
}
_ID_SEQUENCE = re.compile(r"^\s*(\d{1,18}(\s+\d{1,18})*)?\s*$", re.ASCII)
TASKS = ("binary", "multiclass")  # what decode_outputs can answer
V2_DATATYPES = {"string": "BYTES", "float32": "FP32", "float64": "FP64", "int32": "INT32", "int64": "INT64"}


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: str  # string | float32 | float64 | int32 | int64
    column: bool  # shape (None, 1): one value per row kept as a column
    id_sequence: bool = False  # "12 85 3": checked here, so one bad row cannot fail a whole batch

    def convert(self, values: list[Any]) -> np.ndarray:
        """Python values (one per row) -> the array the model takes; a clear InputError otherwise."""
        cleaned = [self._scalar(value, row) for row, value in enumerate(values)]
        array = np.empty(len(cleaned), dtype=object) if self.dtype == "string" else None
        if array is not None:
            array[:] = cleaned
        else:
            array = np.asarray(cleaned, dtype=_NUMPY_DTYPES[self.dtype])
        return array.reshape(-1, 1) if self.column else array

    def _scalar(self, value: Any, row: int) -> Any:
        if self.column and isinstance(value, list):
            if len(value) != 1:
                raise InputError(f"Input '{self.name}' takes one value per instance; instance {row} has {len(value)}.")
            value = value[0]
        if self.dtype == "string":
            if not isinstance(value, str):
                raise InputError(f"Input '{self.name}' takes a string per instance; instance {row} is {_kind(value)}.")
            if self.id_sequence and not _ID_SEQUENCE.match(value):
                raise InputError(
                    f"Input '{self.name}' takes item ids separated by spaces (e.g. \"12 85 3\"); instance {row} is not."
                )
            try:
                return value.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate ("\ud800") is not text
                raise InputError(f"Input '{self.name}': instance {row} is not valid Unicode text.") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError(f"Input '{self.name}' takes a number per instance; instance {row} is {_kind(value)}.")
        if self.dtype.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise InputError(f"Input '{self.name}' takes whole numbers; instance {row} is {value}.")
            limits = np.iinfo(_NUMPY_DTYPES[self.dtype])
            if not limits.min <= value <= limits.max:
                raise InputError(f"Input '{self.name}': instance {row} is outside the {self.dtype} range.")
            return int(value)
        try:
            finite = math.isfinite(value) and abs(float(value)) <= float(np.finfo(_NUMPY_DTYPES[self.dtype]).max)
        except OverflowError:  # an integer too large for any float
            finite = False
        if not finite:
            raise InputError(f"Input '{self.name}': instance {row} is not a finite {self.dtype} number.")
        return float(value)

    def tensor_info(self) -> dict[str, Any]:
        dims = [{"size": "-1", "name": ""}] + ([{"size": "1", "name": ""}] if self.column else [])
        return {"dtype": _TF_DTYPE_NAMES[self.dtype], "tensor_shape": {"dim": dims, "unknown_rank": False}}

    def v2_metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": V2_DATATYPES[self.dtype], "shape": [-1, 1] if self.column else [-1]}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", str: "a string", list: "a list", dict: "an object"}.get(type(value), "a number")


@dataclass(frozen=True)
class Signature:
    """Inputs in signature order; outputs named for what they mean (``probability`` or ``probabilities``)."""

    inputs: tuple[InputSpec, ...]
    label_names: tuple[str, ...]
    binary: bool  # task "binary": one probability per row (of the last label) rather than one per label

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> Signature:
        """Read from the registry's manifest, so metadata and input checks need no loaded model.

        ``task`` and ``input_kind`` are the manifest's own; versions published before the manifest had them get
        them from ``training.templates.manifest_kinds`` (their output key, else their template's declaration).
        """
        kinds = manifest_kinds(manifest)
        if kinds["task"] not in TASKS:
            raise ValueError(f"unsupported task {kinds['task']!r}")
        inputs = []
        for name, spec in (manifest.get("signature") or {}).get("inputs", {}).items():
            dtype = str(spec.get("dtype"))
            if dtype not in _NUMPY_DTYPES:
                raise ValueError(f"unsupported input dtype {dtype} for {name}")
            inputs.append(
                InputSpec(
                    name=name,
                    dtype=dtype,
                    column=len(spec.get("shape") or []) == 2,
                    id_sequence=kinds["input_kind"] == "id_sequence",
                )
            )
        if not inputs:
            raise ValueError("the manifest names no inputs")
        return cls(
            inputs=tuple(inputs),
            label_names=tuple(str(n) for n in manifest.get("label_names") or ()),
            binary=kinds["task"] == "binary",
        )

    def check_function(self, function) -> str:
        """The loaded function must take exactly these inputs; returns its one output's key."""
        _, specs = function.structured_input_signature
        if set(specs) != set(self.input_names):
            raise ValueError(f"the SavedModel takes {sorted(specs)}, the manifest says {self.input_names}")
        (raw_output,) = function.structured_outputs.keys()
        return raw_output

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return ["probability" if self.binary else "probabilities", "label"]

    def example_batch(self, rows: int = 1) -> dict[str, np.ndarray]:
        return {s.name: s.convert(["1 2 3" if s.dtype == "string" else 0] * rows) for s in self.inputs}

    def decode_outputs(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        """The model's output tensor -> probabilities and the label name each row is given."""
        scores = np.asarray(scores, dtype=np.float32)
        names = np.asarray(self.label_names or [str(i) for i in range(max(2, scores.shape[-1]))], dtype=object)
        if self.binary:
            probability = scores.reshape(-1)
            return {"probability": probability, "label": names[(probability >= 0.5).astype(int) + len(names) - 2]}
        return {"probabilities": scores, "label": names[np.argmax(scores, axis=1)]}

    def output_datatype(self, name: str) -> str:
        return "BYTES" if name == "label" else "FP32"

    def rows_of(self, columns: dict[str, np.ndarray]) -> int:
        return len(next(iter(columns.values())))
