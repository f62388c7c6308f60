#!/usr/bin/env python
"""Datasets larger than a worker's memory: validation, preview and a training job at 1 M, 5 M and 20 M rows.

    .venv/bin/python bench/large_dataset.py [--rows 1000000 5000000 20000000] [--epochs 1]

Starts its own SeaweedFS (127.0.0.1:28633) on a fresh SQLite database. For each size it writes a click-log CSV
(about 101 bytes a row: 20 M rows is about 2 GB), stores it as a dataset, validates it (profile and canonical
Parquet copy in one pass), previews it from the canonical copy, then runs a sequence_ctr job on it in a fresh
worker process (``run_job``, as the Celery task calls it) and reads that process's own peak RSS (VmHWM).
Targets: the job trains to completion at every size, the worker's peak RSS stays under 2 GB and flat in the
number of rows; a preview answers in under 1 s at any size (it reads the footer and the first row group).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

from _stack import ROOT, bench_tenant, embedded_stack
from dataset_ingest import make_csv

S3_PORT = 28633
PARAMS = {"batch_size": 1024, "max_len": 20, "embedding_dim": 16, "conv_filters": 16, "lstm_units": 16}
WORKER = """
import json, sys, time
import django
django.setup()
from training.models import TrainingJob
from training.trainer.run import run_job
started = time.perf_counter()
run_job(job_id=sys.argv[1], worker="bench-large")
seconds = time.perf_counter() - started
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
job = TrainingJob.objects.get(pk=sys.argv[1])
print(json.dumps({"status": job.status, "error": job.error_code, "seconds": seconds, "peak_kb": peak,
                  "timings": job.timings, "metrics": job.metrics}))
"""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def one_size(env: dict[str, str], tenant, rows: int, epochs: int) -> dict:
    from datasets import selectors
    from datasets import services as dataset_services
    from datasets.models import Dataset
    from training import services as job_services

    work = Path(env["BENCH_WORK_DIR"])
    path = work / f"clicks-{rows}.csv"
    written = make_csv(path, rows * 101)  # about 101 bytes a row
    size = path.stat().st_size
    with open(path, "rb") as staged:
        dataset = dataset_services.create_dataset(
            tenant=tenant,
            staged=staged,
            staged_sha256=sha256_of(path),
            staged_size=size,
            name=f"clicks-{rows}",
            filename="clicks.csv",
            label_column="clicked",
        )
    path.unlink()
    started = time.perf_counter()
    dataset_services.validate_dataset(dataset_id=dataset.id)
    validate_seconds = time.perf_counter() - started
    dataset = Dataset.objects.get(pk=dataset.id)
    if dataset.status != "ready":
        raise SystemExit(f"dataset {dataset.status}: {dataset.errors}")
    started = time.perf_counter()
    selectors.preview_rows(dataset=dataset, rows=20)
    preview_seconds = time.perf_counter() - started

    job = job_services.create_job(
        tenant=tenant,
        dataset_id=dataset.id,
        template="sequence_ctr",
        model_name=f"large-{rows}",
        label_column="clicked",
        params=PARAMS | {"epochs": epochs},
        validation_split=0.1,
        seed=5,
        max_runtime_seconds=6 * 3600,
    )
    job_services.dispatch_queued_jobs()
    worker = subprocess.run(
        [sys.executable, "-c", WORKER, str(job.id)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if worker.returncode:
        raise SystemExit(f"the worker process failed:\n{worker.stderr[-3000:]}")
    result = json.loads(worker.stdout.strip().splitlines()[-1])
    return {
        "rows": dataset.row_count,
        "written": written,
        "csv_mb": size / 1e6,
        "canonical_mb": dataset.canonical_size_bytes / 1e6,
        "validate_seconds": validate_seconds,
        "preview_seconds": preview_seconds,
        **result,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000, 20_000_000])
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    with embedded_stack(s3_port=S3_PORT, name="large") as env:
        tenant, _ = bench_tenant()
        results = [one_size(env, tenant, rows, args.epochs) for rows in args.rows]
    print(f"sequence_ctr {PARAMS}, {args.epochs} epoch(s), validation_split 0.1")
    print(
        f"{'rows':>11} {'CSV MB':>8} {'Parquet MB':>10} {'validate':>14} {'preview':>8} {'job':>10} "
        f"{'fit rows/s':>10} {'AUC':>6} {'worker peak RSS':>16}"
    )
    for r in results:
        timings = r["timings"] or {}
        fit_rate = timings.get("train_examples_per_epoch", 0) * timings.get("epochs_fitted", 0) / timings["fit"]
        print(
            f"{r['rows']:>11,} {r['csv_mb']:>8.0f} {r['canonical_mb']:>10.0f} "
            f"{r['validate_seconds']:>6.1f} s {r['csv_mb'] / r['validate_seconds']:>4.0f} MB/s "
            f"{r['preview_seconds']:>6.2f} s {r['status']:>10} {fit_rate:>10,.0f} "
            f"{(r['metrics'] or {}).get('auc', float('nan')):>6.3f} {r['peak_kb'] / 1024:>12,.0f} MB"
        )
    peaks = [r["peak_kb"] / 1024 for r in results]
    print(
        f"targets: every job succeeded: {all(r['status'] == 'succeeded' for r in results)}; peak RSS < 2 GB: "
        f"{max(peaks) < 2048}; growth from the smallest to the largest: {peaks[-1] - peaks[0]:+.0f} MB; "
        f"preview < 1 s: {max(r['preview_seconds'] for r in results) < 1}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
