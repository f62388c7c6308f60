#!/usr/bin/env python
"""Dataset ingestion benchmark: the API's upload path against plain boto3, in one run.

    .venv/bin/python bench/dataset_ingest.py [--size-mb 1024]

Starts its own SeaweedFS (127.0.0.1:28333) and gunicorn API (127.0.0.1:28000)
on a fresh SQLite database, generates a click-log CSV of the given size,
then, on the same file and the same S3 server:
  1. uploads it through POST /api/v1/datasets (streamed multipart, as a client would, with the form
     fields first and column_tags={}, so the API streams the file to S3 while it arrives);
  2. uploads it with plain boto3 (upload_file, default transfer settings);
and prints both throughputs, their ratio (target >= 0.92), the API worker's
peak resident memory (target < 300 MB); then validates the dataset pinned to
one core (profile and canonical Parquet copy in one pass; target >= 30 MB/s)
and reads the same file with Arrow's CSV reader alone on that core (the limit).
Everything it starts it stops, by process id.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
from _stack import ROOT, bench_tenant, embedded_stack

from core.s3server import port_is_open

S3_PORT, API_PORT = 28333, 28000


def make_csv(path: Path, size_bytes: int) -> int:
    """A click log: repeat a 1 MB block of realistic rows until the size is reached; returns rows."""
    rng = random.Random(7)
    lines = []
    for i in range(12_000):
        seq = " ".join(str(rng.randint(1, 1000)) for _ in range(rng.randint(8, 40)))
        lines.append(f"u{i},{seq},{rng.randint(0, 1)}\n")
    block = "".join(lines).encode()
    rows_per_block = len(lines)
    rows = 0
    with open(path, "wb") as out:
        out.write(b"user_id,item_sequence,clicked\n")
        written = 0
        while written < size_bytes:
            out.write(block)
            written += len(block)
            rows += rows_per_block
    return rows


def stream_upload(path: Path, key: str, name: str) -> tuple[int, dict]:
    """POST a multipart form with the file streamed from disk in 1 MB chunks (constant client memory).

    The fields come first, with ``column_tags`` empty: that tells the API no column is PII before the file
    arrives, so it streams the file to S3 instead of staging it (datasets/uploads.py).
    """
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\n{name}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="label_column"\r\n\r\nclicked\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="column_tags"\r\n\r\n{{}}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        f"Content-Type: text/csv\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + path.stat().st_size + len(tail)
    connection = http.client.HTTPConnection("127.0.0.1", API_PORT, timeout=3600)
    connection.putrequest("POST", "/api/v1/datasets")
    connection.putheader("Authorization", f"Bearer {key}")
    connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    connection.putheader("Content-Length", str(length))
    connection.endheaders()
    connection.send(head)
    with open(path, "rb") as source:
        while chunk := source.read(1024 * 1024):
            connection.send(chunk)
    connection.send(tail)
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    args = parser.parse_args()
    for port in (S3_PORT, API_PORT):
        if port_is_open("127.0.0.1", port):
            raise SystemExit(f"port {port} is busy")

    with embedded_stack(s3_port=S3_PORT, name="ingest") as env:
        return run(env, args)


def run(env: dict[str, str], args) -> int:
    from core import storage
    from datasets import services as dataset_services
    from datasets.models import Dataset

    work = Path(env["BENCH_WORK_DIR"])
    _, api_key = bench_tenant()
    api = None
    try:
        csv_path = work / "clicks.csv"
        rows = make_csv(csv_path, args.size_mb * 1024 * 1024)
        size = csv_path.stat().st_size
        print(f"file: {size / 1e6:.0f} MB, {rows} rows")

        api = subprocess.Popen(
            [str(Path(sys.executable).with_name("gunicorn")), "-c", "platform/gunicorn.conf.py", "config.wsgi"],
            cwd=ROOT,
            env=env | {"GUNICORN_BIND": f"127.0.0.1:{API_PORT}", "GUNICORN_WORKERS": "1", "GUNICORN_TIMEOUT": "3600"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not port_is_open("127.0.0.1", API_PORT):
            if time.monotonic() > deadline or api.poll() is not None:
                raise SystemExit("gunicorn did not start")
            time.sleep(0.2)
        small = work / "small.csv"  # one small request loads the app before timing
        small.write_bytes(b"a,clicked\n1,0\n2,1\n")
        stream_upload(small, api_key, "warmup")

        started = time.perf_counter()
        status, body = stream_upload(csv_path, api_key, "bench clicks")
        api_seconds = time.perf_counter() - started
        if status != 201:
            raise SystemExit(f"upload failed: {status} {body}")
        worker_pids = children(api.pid)
        api_peak = max(peak_rss_mb(pid) for pid in worker_pids) if worker_pids else float("nan")

        started = time.perf_counter()
        storage.client().upload_file(str(csv_path), storage.bucket(), "baseline/clicks.csv")
        boto_seconds = time.perf_counter() - started

        # Validation on one core, as a validation worker runs it: read from S3, profile, write the canonical copy.
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        pa.set_cpu_count(1)
        started = time.perf_counter()
        dataset_services.validate_dataset(dataset_id=body["id"])
        validate_seconds = time.perf_counter() - started
        dataset = Dataset.objects.get(pk=body["id"])
        # The physical limit on the same core: Arrow's C++ CSV reader alone, from the local file, nothing else.
        started = time.perf_counter()
        with pa_csv.open_csv(csv_path, read_options=pa_csv.ReadOptions(use_threads=False)) as reader:
            for _ in reader:
                pass
        arrow_seconds = time.perf_counter() - started

        api_mb_s, boto_mb_s = size / 1e6 / api_seconds, size / 1e6 / boto_seconds
        print(f"API upload (POST /api/v1/datasets): {api_seconds:7.2f} s  {api_mb_s:7.1f} MB/s")
        print(f"plain boto3 upload_file:            {boto_seconds:7.2f} s  {boto_mb_s:7.1f} MB/s")
        print(f"ratio API / boto3:                  {api_mb_s / boto_mb_s:7.2f}   (target >= 0.92)")
        print(f"API worker peak RSS:                {api_peak:7.0f} MB (target < 300 MB)")
        validate_mb_s, arrow_mb_s = size / 1e6 / validate_seconds, size / 1e6 / arrow_seconds
        print(
            f"validation on one core: {dataset.status}, {dataset.row_count} rows in {validate_seconds:.1f} s = "
            f"{dataset.row_count / validate_seconds:,.0f} rows/s, {validate_mb_s:.1f} MB/s (target >= 30 MB/s; "
            f"profile and canonical copy of {dataset.canonical_size_bytes / 1e6:.0f} MB in the same pass)"
        )
        print(
            f"Arrow's CSV reader alone on one core, local file: {arrow_mb_s:.1f} MB/s "
            f"(validation reaches {validate_mb_s / arrow_mb_s:.2f} of it)"
        )
        return 0
    finally:
        if api is not None:
            api.terminate()
            api.wait(timeout=30)


if __name__ == "__main__":
    raise SystemExit(main())
