#!/usr/bin/env python
"""The in-process limit: the model called in a tight loop, no HTTP, no batcher.

    .venv/bin/python bench/_inprocess.py --model-dir DIR --inputs-file seqs.json --batch-sizes 1,12 --seconds 5
    .venv/bin/python bench/_inprocess.py --compiled ...   # the compiled artifact in that folder instead

Run as its own process (nothing else competes with it). Each call does what the serving process does around
the model, rotating over the real sample sequences: for the SavedModel (``LoadedModel.predict``) a numpy object
array of UTF-8 bytes -> ``tf.constant`` -> ``serving_default`` -> ``.numpy()``; with ``--compiled``
(``CompiledVersion.predict``) the same array -> the NumPy preprocessing -> ONNX Runtime, one thread, with
TensorFlow never imported. Prints one JSON object per batch size: calls, rows/s and the per-call p50/p99 latency
in ms.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def measure(call, batches: list, seconds: float) -> dict:
    for batch in batches[:20]:  # warm-up: traces and kernels for this batch shape
        call(batch)
    latencies, rows, index = [], 0, 0
    started, cpu = time.perf_counter(), time.process_time()
    deadline = started + seconds
    while True:
        batch = batches[index % len(batches)]
        index += 1
        t0 = time.perf_counter()
        call(batch)
        t1 = time.perf_counter()
        latencies.append(t1 - t0)
        rows += len(batch)
        if t1 >= deadline:
            break
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    latencies.sort()
    return {
        "batch_size": len(batches[0]),
        "calls": len(latencies),
        "rows_per_s": rows / elapsed,
        "calls_per_s": len(latencies) / elapsed,
        "cores": cpu / elapsed,  # TensorFlow's own threads included: what one calling thread really costs
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--inputs-file", required=True, help="a JSON list of input strings")
    parser.add_argument("--batch-sizes", default="1")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--compiled", action="store_true", help="the compiled artifact (ONNX Runtime), not TF")
    args = parser.parse_args()
    call, input_name, output, rank, runtime = (compiled_call if args.compiled else saved_model_call)(args.model_dir)
    with open(args.inputs_file) as handle:
        values = [v.encode("utf-8") for v in json.load(handle)]
    results = []
    for size in (int(s) for s in args.batch_sizes.split(",")):
        batches = []
        for start in range(0, max(len(values), size * 64), size):
            batch = np.empty(size, dtype=object)
            batch[:] = [values[(start + i) % len(values)] for i in range(size)]
            batches.append(batch.reshape(-1, 1) if rank == 2 else batch)
        results.append(measure(call, batches, args.seconds))
    print(json.dumps({"input": input_name, "output": output, "runtime": runtime, "results": results}))
    return 0


def saved_model_call(model_dir: str):
    import tensorflow as tf

    tf.constant([1.0]) + 1.0  # start the runtime before timing anything
    function = tf.saved_model.load(model_dir).signatures["serving_default"]
    (input_name, spec), *_ = function.structured_input_signature[1].items()
    output = sorted(function.structured_outputs)[0]

    def call(batch: np.ndarray) -> np.ndarray:
        return function(**{input_name: tf.constant(batch)})[output].numpy()

    return call, input_name, output, len(spec.shape), f"tensorflow {tf.__version__}"


def compiled_call(model_dir: str):
    import sys
    from pathlib import Path

    import onnxruntime

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, for training.compiled
    from training import compiled

    folder = Path(model_dir)
    model = compiled.CompiledModel(
        model_bytes=(folder / compiled.MODEL_FILE).read_bytes(),
        spec=json.loads((folder / compiled.SPEC_FILE).read_bytes()),
    )
    (step,) = model.preprocessor.steps
    rank = 2 if step.kind in {"one_hot", "normalize", "identity"} else 1

    def call(batch: np.ndarray) -> np.ndarray:
        return model.scores({step.column: batch})

    if "tensorflow" in sys.modules:
        raise SystemExit("the compiled path imported TensorFlow")
    return call, step.column, model.output, rank, f"onnxruntime {onnxruntime.__version__}"


if __name__ == "__main__":
    raise SystemExit(main())
