#!/usr/bin/env python
"""Training overhead: the same model, data and seed as a platform job and as a plain Keras script, in one run.

    .venv/bin/python bench/training_overhead.py [--rows 8000] [--epochs 3]

Starts its own SeaweedFS (127.0.0.1:28533), gunicorn API (127.0.0.1:28100)
and a Celery worker on the gpu queue (CPU here). The platform side submits
POST /api/v1/jobs and waits for ``succeeded``; the baseline builds the same
sequence_ctr model with plain Keras from the local CSV and calls ``fit``.
Prints fit samples/s for both and their ratio (target >= 0.95), and the job's
end-to-end time outside ``fit`` (queue wait, download, checkpoints,
evaluation, export, upload and registration), phase by phase.
"""

from __future__ import annotations

import argparse
import csv
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


def plain_keras_run(args, csv_bytes: bytes, train_examples: int) -> float:
    """Plain Keras on the same rows: the same architecture, batch size and per-epoch validation, no platform code."""
    import keras
    import numpy as np
    import tensorflow as tf

    from training.trainer.models import sequence_ctr

    keras.utils.set_random_seed(7)
    rows = list(csv.DictReader(io.StringIO(csv_bytes.decode())))
    order = np.random.default_rng(7).permutation(len(rows))
    validation = round(len(rows) * 0.2)
    train_rows = [rows[i] for i in np.sort(order[validation:])]
    val_rows = [rows[i] for i in np.sort(order[:validation])]
    max_id = max(int(t) for r in rows for t in r["item_sequence"].split())
    from training.templates import TEMPLATES

    params = TEMPLATES["sequence_ctr"].resolve_params(PARAMS | {"epochs": args.epochs})
    model = sequence_ctr(column="item_sequence", params=params, vocab_size=max_id + 1)
    x = tf.constant([r["item_sequence"] for r in train_rows])
    y = np.array([float(r["clicked"]) for r in train_rows], dtype="float32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(y), seed=7).batch(params["batch_size"]).prefetch(2)
    val_x = tf.constant([r["item_sequence"] for r in val_rows])
    val_y = np.array([float(r["clicked"]) for r in val_rows], dtype="float32")
    val = tf.data.Dataset.from_tensor_slices((val_x, val_y)).batch(params["batch_size"]).prefetch(2)
    assert len(y) == train_examples, (len(y), train_examples)
    started = time.perf_counter()
    model.fit(data, validation_data=val, epochs=args.epochs, verbose=0)  # the same work: per-epoch validation
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
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
        plain_seconds = plain_keras_run(args, csv_bytes, examples)
        plain_rate = examples * args.epochs / plain_seconds
        outside_fit = result["end_to_end"] - timings["fit"]
        print(
            f"data: {args.rows} click rows ({examples} train), sequence_ctr default sizes, batch "
            f"{PARAMS['batch_size']}, {args.epochs} epochs, seed 7; validation AUC {job['metrics']['auc']:.4f}"
        )
        print(f"platform job fit:  {timings['fit']:8.2f} s  {platform_rate:9.1f} samples/s")
        print(f"plain Keras fit:   {plain_seconds:8.2f} s  {plain_rate:9.1f} samples/s")
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
