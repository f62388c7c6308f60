"""Request bodies of the two protocols -> columns for the batcher, and model outputs -> response bodies.

TensorFlow Serving REST: ``{"instances": [...]}`` (rows) or ``{"inputs": ...}``
(columns), optional ``signature_name``. KServe Open Inference Protocol v2:
``{"inputs": [{"name", "shape", "datatype", "data"}], "outputs": [...]}``, with the binary tensor data extension
(what NVIDIA's ``tritonclient`` sends by default): the JSON header is the first ``Inference-Header-Content-Length``
bytes of the body, and an input with ``parameters.binary_data_size`` has its values after it, little-endian
(``BYTES``: each value a 4-byte length and its bytes), in the order of the inputs. Outputs asked for with
``parameters.binary_data`` (or the request's ``binary_data_output``) are answered the same way.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.runtime.signatures import V2_DATATYPES, InputError, Signature

SIGNATURE_NAME = "serving_default"


@dataclass(frozen=True)
class Parsed:
    columns: dict[str, np.ndarray]
    rows: int
    row_format: bool = True  # TF Serving: answer "predictions" (rows) or "outputs" (columns)
    request_id: str | None = None
    output_names: tuple[str, ...] | None = None  # KServe: the outputs asked for
    binary_outputs: frozenset[str] = frozenset()  # KServe: the outputs to answer as binary tensor data


def _check_rows(rows: int, max_instances: int) -> None:
    if rows == 0:
        raise InputError("The request has no instances.")
    if rows > max_instances:
        raise InputError(f"At most {max_instances} instances per request; this one has {rows}.")


def _unknown_fields(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InputError(f"Unknown field(s): {', '.join(unknown)}.")


def parse_tfserving(body: Any, signature: Signature, *, max_instances: int) -> Parsed:
    if not isinstance(body, dict):
        raise InputError('The body must be a JSON object with "instances" or "inputs".')
    _unknown_fields(body, {"instances", "inputs", "signature_name"})
    name = body.get("signature_name", SIGNATURE_NAME)
    if name != SIGNATURE_NAME:
        raise InputError(f"Unknown signature_name {name!r}; this model has {SIGNATURE_NAME!r}.")
    if ("instances" in body) == ("inputs" in body):
        raise InputError('Send exactly one of "instances" (rows) or "inputs" (columns).')
    if "instances" in body:
        return _instances(body["instances"], signature, max_instances)
    return _inputs(body["inputs"], signature, max_instances)


def _instances(instances: Any, signature: Signature, max_instances: int) -> Parsed:
    if not isinstance(instances, list):
        raise InputError('"instances" must be a list with one entry per row.')
    _check_rows(len(instances), max_instances)
    names = signature.input_names
    per_input: dict[str, list[Any]] = {name: [] for name in names}
    for row, instance in enumerate(instances):
        if isinstance(instance, dict):
            _check_names(set(instance), names, where=f"instance {row}")
            for name in names:
                per_input[name].append(instance[name])
        elif len(names) == 1:
            per_input[names[0]].append(instance)
        else:
            raise InputError(f"This model takes {len(names)} inputs: each instance must be an object naming them.")
    columns = {spec.name: spec.convert(per_input[spec.name]) for spec in signature.inputs}
    return Parsed(columns=columns, rows=len(instances))


def _inputs(inputs: Any, signature: Signature, max_instances: int) -> Parsed:
    names = signature.input_names
    if isinstance(inputs, list) and len(names) == 1:
        inputs = {names[0]: inputs}
    if not isinstance(inputs, dict):
        raise InputError(f'"inputs" must be an object mapping {", ".join(names)} to lists of values.')
    _check_names(set(inputs), names, where='"inputs"')
    lengths = set()
    for name in names:
        if not isinstance(inputs[name], list):
            raise InputError(f"Input '{name}' must be a list with one value per row.")
        lengths.add(len(inputs[name]))
    if len(lengths) > 1:
        raise InputError("Every input must have the same number of rows.")
    rows = lengths.pop()
    _check_rows(rows, max_instances)
    columns = {spec.name: spec.convert(inputs[spec.name]) for spec in signature.inputs}
    return Parsed(columns=columns, rows=rows, row_format=False)


def _check_names(given: set[str], expected: list[str], *, where: str) -> None:
    missing = [n for n in expected if n not in given]
    unknown = sorted(given - set(expected))
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing input(s) {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown input(s) {', '.join(unknown)}")
        raise InputError(f"{where}: {'; '.join(parts)}. The model takes {', '.join(expected)}.")


def tfserving_response(outputs: dict[str, np.ndarray], parsed: Parsed) -> dict[str, Any]:
    lists = {name: values.tolist() for name, values in outputs.items()}
    if not parsed.row_format:
        return {"outputs": lists}
    names = list(lists)
    return {"predictions": [dict(zip(names, row, strict=True)) for row in zip(*lists.values(), strict=True)]}


def parse_v2(body: Any, signature: Signature, *, max_instances: int, binary: bytes | None = None) -> Parsed:
    """``binary``: the bytes after the JSON header when the request uses the binary tensor data extension."""
    if not isinstance(body, dict):
        raise InputError('The body must be a JSON object with "inputs".')
    _unknown_fields(body, {"id", "parameters", "inputs", "outputs"})
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InputError('"id" must be a string.')
    binary_output = _parameters(body, {"binary_data_output": bool}, where="the request").get("binary_data_output")
    tensors = body.get("inputs")
    if not isinstance(tensors, list) or not all(isinstance(t, dict) for t in tensors):
        raise InputError('"inputs" must be a list of tensors, each {"name", "shape", "datatype", "data"}.')
    by_name: dict[str, dict[str, Any]] = {}
    for tensor in tensors:
        name = tensor.get("name")
        if not isinstance(name, str) or name in by_name:
            raise InputError("Every input tensor needs a distinct string name.")
        by_name[name] = tensor
    _check_names(set(by_name), signature.input_names, where='"inputs"')
    chunks = _binary_chunks(tensors, binary)
    # Every declared shape, datatype and count is checked before a single value is converted: a body of 800,000
    # values is refused from its shape and length, not after turning them into an array.
    checked = {
        spec.name: _v2_tensor(by_name[spec.name], spec.name, V2_DATATYPES[spec.dtype], chunks.get(spec.name))
        for spec in signature.inputs
    }
    rows = {count for _, count in checked.values()}
    if len(rows) > 1:
        raise InputError("Every input must have the same number of rows.")
    count = rows.pop()
    _check_rows(count, max_instances)
    output_names, binary_outputs = _v2_outputs(body, signature, binary_output=bool(binary_output))
    columns = {
        spec.name: spec.convert(_values(checked[spec.name][0], V2_DATATYPES[spec.dtype], spec.name, count))
        for spec in signature.inputs
    }
    return Parsed(
        columns=columns,
        rows=count,
        request_id=request_id,
        output_names=output_names,
        binary_outputs=binary_outputs,
    )


def _parameters(item: dict[str, Any], allowed: dict[str, type], *, where: str) -> dict[str, Any]:
    parameters = item.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InputError(f'"parameters" of {where} must be an object.')
    for key, value in parameters.items():
        kind = allowed.get(key)
        if kind is None:
            raise InputError(f"Unknown parameter {key!r} of {where}; known: {', '.join(sorted(allowed)) or 'none'}.")
        if type(value) is not kind or (kind is int and value < 0):
            raise InputError(
                f"Parameter {key!r} of {where} must be a {'non-negative integer' if kind is int else kind.__name__}."
            )
    return parameters


def _binary_chunks(tensors: list[dict[str, Any]], binary: bytes | None) -> dict[str, memoryview]:
    """Each binary input's bytes, cut from the data after the JSON header in the order of the inputs."""
    chunks, offset, data = {}, 0, memoryview(binary or b"")
    for tensor in tensors:
        size = _parameters(tensor, {"binary_data_size": int}, where=f"input '{tensor['name']}'").get("binary_data_size")
        if size is None:
            continue
        if binary is None:
            raise InputError(
                f"Input '{tensor['name']}' declares binary data, but the request has no "
                "Inference-Header-Content-Length header."
            )
        if offset + size > len(data):
            raise InputError(f"Input '{tensor['name']}' declares {size} bytes of binary data; fewer follow.")
        chunks[tensor["name"]] = data[offset : offset + size]
        offset += size
    if offset != len(data):
        raise InputError(f"{len(data) - offset} bytes of binary data follow the inputs that declare theirs.")
    return chunks


def _v2_tensor(tensor: dict[str, Any], name: str, datatype: str, chunk: memoryview | None) -> tuple[Any, int]:
    """The tensor's data (a list, or its binary bytes) and row count, checked without converting a value."""
    _unknown_fields(tensor, {"name", "shape", "datatype", "data", "parameters"})
    shape, given_type, data = tensor.get("shape"), tensor.get("datatype"), tensor.get("data")
    if given_type != datatype:
        raise InputError(f"Input '{name}' has datatype {datatype}, not {given_type!r}.")
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InputError(f"Input '{name}': shape must be a list of non-negative integers, rows first.")
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise InputError(f"Input '{name}' takes shape [rows] or [rows, 1], not {shape}.")
    rows = shape[0]
    if chunk is not None:
        if data is not None:
            raise InputError(f"Input '{name}' has both \"data\" and binary data.")
        width = _BINARY_WIDTHS.get(datatype)
        if width is not None and len(chunk) != rows * width:
            raise InputError(
                f"Input '{name}': shape {shape} of {datatype} needs {rows * width} bytes, not {len(chunk)}."
            )
        return chunk, rows
    if not isinstance(data, list):
        raise InputError(f"Input '{name}': data must be a list.")
    nested = bool(data) and isinstance(data[0], list)
    if len(data) != rows or (nested and not all(isinstance(item, list) and len(item) == 1 for item in data)):
        given = f"{len(data)} row(s)" if nested else f"{len(data)} value(s)"
        raise InputError(f"Input '{name}': shape {shape} needs {rows} values, one per row; data has {given}.")
    return data, rows


_BINARY_WIDTHS = {"FP32": 4, "FP64": 8, "INT32": 4, "INT64": 8}
_BINARY_TYPES = {"FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "INT64": "<i8"}


def _values(data: Any, datatype: str, name: str, rows: int) -> list[Any]:
    """Python values, one per row, from a JSON list or from binary tensor data (already sized by ``_v2_tensor``)."""
    if not isinstance(data, memoryview):
        return _flat(data)
    if datatype != "BYTES":
        return np.frombuffer(data, dtype=_BINARY_TYPES[datatype]).tolist()
    values, offset = [], 0
    for row in range(rows):
        if offset + 4 > len(data):
            raise InputError(f"Input '{name}': binary data ends before value {row}.")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise InputError(f"Input '{name}': value {row} declares {length} bytes; fewer follow.")
        try:
            values.append(bytes(data[offset : offset + length]).decode("utf-8"))
        except UnicodeDecodeError:
            raise InputError(f"Input '{name}': value {row} is not UTF-8 text.") from None
        offset += length
    if offset != len(data):
        raise InputError(f"Input '{name}': {len(data) - offset} bytes follow its {rows} values.")
    return values


def _flat(data: list[Any]) -> list[Any]:
    return [item[0] for item in data] if data and isinstance(data[0], list) else data


def _v2_outputs(
    body: dict[str, Any], signature: Signature, *, binary_output: bool
) -> tuple[tuple[str, ...] | None, frozenset[str]]:
    """The outputs asked for (None: all) and which of them to answer as binary tensor data."""
    requested = body.get("outputs")
    if requested is None:
        return None, frozenset(signature.output_names if binary_output else ())
    if not isinstance(requested, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
    ):
        raise InputError('"outputs" must be a list of {"name": ...}.')
    names = tuple(o["name"] for o in requested)
    unknown = [n for n in names if n not in signature.output_names]
    if unknown:
        raise InputError(f"Unknown output(s) {', '.join(unknown)}; the model has {', '.join(signature.output_names)}.")
    binary = set()
    for output in requested:
        _unknown_fields(output, {"name", "parameters"})
        flag = _parameters(output, {"binary_data": bool}, where=f"output '{output['name']}'").get("binary_data")
        if flag if flag is not None else binary_output:
            binary.add(output["name"])
    return names, frozenset(binary)


def v2_response(
    outputs: dict[str, np.ndarray], parsed: Parsed, signature: Signature, *, model_name: str, version: int
) -> tuple[dict[str, Any], list[bytes]]:
    """The response's JSON and, for outputs answered as binary tensor data, their bytes in the same order."""
    names = parsed.output_names or tuple(outputs)
    chunks: list[bytes] = []
    tensors = []
    for name in names:
        datatype = signature.output_datatype(name)
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(outputs[name].shape)}
        if name in parsed.binary_outputs:
            chunk = _binary(outputs[name], datatype)
            tensor["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            tensor["data"] = outputs[name].reshape(-1).tolist()
        tensors.append(tensor)
    body: dict[str, Any] = {"model_name": model_name, "model_version": str(version), "outputs": tensors}
    if parsed.request_id is not None:
        body["id"] = parsed.request_id
    return body, chunks


def _binary(values: np.ndarray, datatype: str) -> bytes:
    if datatype != "BYTES":
        return np.ascontiguousarray(values, dtype=_BINARY_TYPES[datatype]).tobytes()
    parts = []
    for value in values.reshape(-1):
        raw = str(value).encode("utf-8")
        parts += [struct.pack("<I", len(raw)), raw]
    return b"".join(parts)


def tfserving_metadata(signature: Signature, *, model_name: str, version: int) -> dict[str, Any]:
    outputs = {
        name: {"dtype": "DT_STRING" if name == "label" else "DT_FLOAT", "tensor_shape": {"dim": [{"size": "-1"}]}}
        for name in signature.output_names
    }
    return {
        "model_spec": {"name": model_name, "signature_name": "", "version": str(version)},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    SIGNATURE_NAME: {
                        "inputs": {spec.name: spec.tensor_info() | {"name": spec.name} for spec in signature.inputs},
                        "outputs": outputs,
                        "method_name": "tensorflow/serving/predict",
                    }
                }
            },
            "label_names": list(signature.label_names),
        },
    }


def v2_metadata(signature: Signature, *, model_name: str, versions: list[int]) -> dict[str, Any]:
    return {
        "name": model_name,
        "versions": [str(v) for v in versions],
        "platform": "tensorflow_savedmodel",
        "inputs": [spec.v2_metadata() for spec in signature.inputs],
        "outputs": [
            {
                "name": name,
                "datatype": signature.output_datatype(name),
                "shape": [-1] if name != "probabilities" else [-1, len(signature.label_names)],
            }
            for name in signature.output_names
        ],
        "parameters": {"label_names": list(signature.label_names)},
    }
