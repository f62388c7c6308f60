#!/usr/bin/env python
"""Training overhead: the same model, data and seed as a platform job and as a plain Keras script, in one run.

    .venv/bin/python bench/training_overhead.py [--rows 8000] [--epochs 3]

Starts its own SeaweedFS (127.0.0.1:28533), gunicorn API (127.0.0.1:28100)
and a Celery worker on the gpu queue (CPU here). The platform side submits
POST /api/v1/jobs and waits for ``succeeded`` (the job streams its data from
the canonical copy in S3); the baseline, in its own fresh process, builds the
same sequence_ctr model with plain Keras on the same rows held in memory and
calls ``fit``; both times include the first epoch's tracing.
Prints fit samples/s for both and their ratio (target >= 0.95), and the job's
end-to-end time outside ``fit`` (queue wait, download, checkpoints,
evaluation, export, upload and registration), phase by phase.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from _stack import ROOT, bench_tenant, embedded_stack

from core.s3server import port_is_open

S3_PORT, API_PORT = 28533, 28100
PARAMS = {"batch_size": 64}


def api(method: str, path: str, key: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{API_PORT}{path}",
        method=method,
        data=json.dumps(body).encode() if body else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as handle:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)


def platform_run(env, args, csv_bytes: bytes) -> dict:
    from datasets import services

    work = Path(env["BENCH_WORK_DIR"])
    tenant, key = bench_tenant()
    dataset = services.create_dataset(
        tenant=tenant,
        staged=io.BytesIO(csv_bytes),
        staged_sha256=hashlib.sha256(csv_bytes).hexdigest(),
        staged_size=len(csv_bytes),
        name="clicks",
        filename="clicks.csv",
        label_column="clicked",
    )
    services.validate_dataset(dataset_id=dataset.id)
    bin_dir = Path(sys.executable).parent
    processes = [
        start(
            [str(bin_dir / "gunicorn"), "-c", "platform/gunicorn.conf.py", "config.wsgi"],
            env | {"GUNICORN_BIND": f"127.0.0.1:{API_PORT}", "GUNICORN_WORKERS": "1"},
            work / "api.log",
        ),
        start(
            [
                str(bin_dir / "celery"),
                "-A",
                "config",
                "worker",
                "-Q",
                "gpu,cpu,default",
                "-c",
                "1",
                "-n",
                "bench@%h",
                "--loglevel=WARNING",
            ],
            env,
            work / "worker.log",
        ),
    ]
    try:
        deadline = time.monotonic() + 60
        while not port_is_open("127.0.0.1", API_PORT):
            if time.monotonic() > deadline:
                raise SystemExit("API did not start")
            time.sleep(0.2)
        time.sleep(5)  # let the worker finish booting so queue wait measures the platform, not start-up
        body = {
            "dataset": str(dataset.id),
            "template": "sequence_ctr",
            "model_name": "ctr",
            "label_column": "clicked",
            "params": PARAMS | {"epochs": args.epochs},
            "seed": 7,
            "validation_split": 0.2,
        }
        submitted = time.perf_counter()
        job = api("POST", "/api/v1/jobs", key, body)
        while job["status"] not in {"succeeded", "failed", "cancelled"}:
            time.sleep(0.5)
            job = api("GET", f"/api/v1/jobs/{job['id']}", key)
        end_to_end = time.perf_counter() - submitted
        if job["status"] != "succeeded":
            raise SystemExit(f"job {job['status']}: {job['error_message']}")
        return {"job": job, "end_to_end": end_to_end}
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)


def plain_keras_run(csv_path: Path, epochs: int) -> dict:
    """Plain Keras on the same rows, as a careful user would write it: the CSV read once into memory, the same
    train/validation rows as the job (its row-hash split), the same architecture, batch size and per-epoch
    validation, ``from_tensor_slices`` -> full shuffle -> batch -> prefetch(AUTOTUNE). Runs in its own fresh process
    (see ``main``); like the job's ``fit`` phase it includes the first epoch's tracing."""
    import keras
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import tensorflow as tf

    from training.templates import TEMPLATES
    from training.trainer.data import row_hashes
    from training.trainer.models import sequence_ctr

    keras.utils.set_random_seed(7)
    as_text = pa_csv.ConvertOptions(column_types={"item_sequence": pa.string()})
    table = pa_csv.read_csv(csv_path, convert_options=as_text)
    sequences = np.array(table.column("item_sequence").to_pylist(), dtype=object)
    labels = table.column("clicked").to_numpy().astype("float32")
    held_out = row_hashes(seed=7, first_row=0, rows=len(labels)) < 0.2
    max_id = max(int(t) for s in sequences for t in s.split())
    params = TEMPLATES["sequence_ctr"].resolve_params(PARAMS | {"epochs": epochs})
    model = sequence_ctr(column="item_sequence", params=params, vocab_size=max_id + 1)
    train = (
        tf.data.Dataset.from_tensor_slices((sequences[~held_out].astype(str), labels[~held_out]))
        .shuffle(int((~held_out).sum()), seed=7)
        .batch(params["batch_size"])
        .prefetch(tf.data.AUTOTUNE)
    )
    val = (
        tf.data.Dataset.from_tensor_slices((sequences[held_out].astype(str), labels[held_out]))
        .batch(params["batch_size"])
        .prefetch(tf.data.AUTOTUNE)
    )
    started = time.perf_counter()
    model.fit(train, validation_data=val, epochs=epochs, verbose=0)  # the same work: per-epoch validation
    return {"seconds": time.perf_counter() - started, "train_examples": int((~held_out).sum())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--plain-keras-only", type=Path, help=argparse.SUPPRESS)  # the baseline's own process
    args = parser.parse_args()
    if args.plain_keras_only:
        print(json.dumps(plain_keras_run(args.plain_keras_only, args.epochs)))
        return 0
    if port_is_open("127.0.0.1", API_PORT):
        raise SystemExit(f"port {API_PORT} is busy")
    with embedded_stack(s3_port=S3_PORT, name="training") as env:
        from datasets.sample_data import write_csv

        text = io.StringIO()
        write_csv("ctr", args.rows, text, seed=11)
        csv_bytes = text.getvalue().encode()
        result = platform_run(env, args, csv_bytes)
        job, timings = result["job"], result["job"]["timings"]
        examples = timings["train_examples_per_epoch"]
        platform_rate = examples * timings["epochs_fitted"] / timings["fit"]
        csv_path = Path(env["BENCH_WORK_DIR"]) / "clicks.csv"
        csv_path.write_bytes(csv_bytes)
        baseline = subprocess.run(
            [sys.executable, __file__, "--plain-keras-only", str(csv_path), "--epochs", str(args.epochs)],
            capture_output=True,
            text=True,
            check=True,
        )
        plain = json.loads(baseline.stdout.strip().splitlines()[-1])
        assert plain["train_examples"] == examples, (plain, examples)
        plain_rate = examples * args.epochs / plain["seconds"]
        outside_fit = result["end_to_end"] - timings["fit"]
        print(
            f"data: {args.rows} click rows ({examples} train), sequence_ctr default sizes, batch "
            f"{PARAMS['batch_size']}, {args.epochs} epochs, seed 7; validation AUC {job['metrics']['auc']:.4f}"
        )
        print(f"platform job fit (streamed from S3): {timings['fit']:8.2f} s  {platform_rate:9.1f} samples/s")
        print(f"plain Keras fit (in memory):         {plain['seconds']:8.2f} s  {plain_rate:9.1f} samples/s")
        print(f"ratio platform / plain: {platform_rate / plain_rate:.3f}   (target >= 0.95)")
        phases = ", ".join(
            f"{name} {timings[name]:.2f} s"
            for name in ("queue_wait", "load", "checkpoint", "evaluate", "export", "compile", "upload_register")
            if name in timings
        )
        print(
            f"job end to end {result['end_to_end']:.2f} s; outside fit {outside_fit:.2f} s ({phases}; the rest is "
            "dispatch, TensorFlow start-up in the worker and polling)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
