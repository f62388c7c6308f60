#!/usr/bin/env python
"""``:explain`` beside ``:predict`` at batch 1, for each template, on the serving process (one run).

    .venv/bin/python bench/explain.py [--rows 2000] [--epochs 1] [--requests 40] [--s3-port 18533]

Starts its own SeaweedFS and SQLite (``bench/_stack.py``), trains each template with its default layer sizes
through the platform's own trainer (so the version has its compiled artifact and its ``explain`` signature), starts
``manage.py serve_models`` as a subprocess, and measures one client sending one instance per request, one request
at a time, over keep-alive HTTP: the first explanation (fetching the SavedModel, starting TensorFlow, tracing the
explain function) and the first prediction, then ``--requests`` warm requests of each kind over distinct dataset
rows (interleaved, so both see the same machine). Prints the medians and 90th percentiles and their ratio, and the
largest approximation error seen. Exits 0 when everything was measured, 2 when something could not be.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import io
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != HERE]  # "serving" is the Django app
sys.path.insert(0, str(HERE.parent))
sys.path.append(str(HERE))

from _stack import ROOT, bench_tenant, embedded_stack  # noqa: E402
from model_quality import dataset_from_sample  # noqa: E402

# (template, sample data kind, label column, feature columns (None: the template's choice)), one job each.
JOBS = [
    ("sequence_ctr", "ctr", "clicked", None),
    ("text_classifier", "sentiment", "sentiment", None),
    ("tabular_classifier", "tabular", "defaulted", ["age", "income", "debt_ratio", "employment", "late_payments"]),
]
LOGS = ROOT / "var" / "bench" / "explain-last"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Client:
    """One keep-alive connection: what a tenant's single client does."""

    def __init__(self, port: int, key: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def post(self, path: str, body: dict) -> tuple[float, dict]:
        started = time.perf_counter()
        self.connection.request("POST", path, json.dumps(body), self.headers)
        response = self.connection.getresponse()
        payload = response.read()
        seconds = time.perf_counter() - started
        if response.status != 200:
            raise SystemExit(f"POST {path} -> {response.status}: {payload[:500]!r}")
        return seconds, json.loads(payload)


def train(tenant, dataset, template: str, label: str, features: list[str] | None, epochs: int):
    """A job run in this process exactly as a worker runs it; the published version."""
    from serving.models import ModelVersion
    from training import services as job_services
    from training.models import TrainingJob
    from training.trainer.run import run_job

    job = job_services.create_job(
        tenant=tenant,
        dataset_id=dataset.id,
        template=template,
        model_name=dataset.name,
        label_column=label,
        feature_columns=features,
        params={"epochs": epochs},
        validation_split=0.2,
        seed=3,
    )
    run_job(job_id=str(job.id), worker="bench")
    job = TrainingJob.objects.get(pk=job.pk)
    if job.status != "succeeded":
        raise SystemExit(f"{template} failed: {job.error_message}\n{job.error_traceback}")
    return ModelVersion.objects.get(job=job)


def instances(dataset, version, count: int) -> list[dict]:
    from core import storage

    inputs = version.manifest["signature"]["inputs"]
    rows = list(csv.DictReader(io.StringIO(storage.get_bytes(dataset.object_key).decode("utf-8"))))[:count]
    return [
        {name: float(row[name]) if spec["dtype"].startswith("float") else row[name] for name, spec in inputs.items()}
        for row in rows
    ]


def wait_ready(process: subprocess.Popen, port: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the serving process exited; see {LOGS}/serving.log")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/v2/health/ready")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the serving process was not ready")


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000, help="sample rows each template trains on")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--requests", type=int, default=40, help="warm requests of each kind per template")
    parser.add_argument("--s3-port", type=int, default=18533)
    args = parser.parse_args()
    print("command: " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]), flush=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    report = []
    with embedded_stack(s3_port=args.s3_port, name="explain") as env:
        tenant, key = bench_tenant("ExplainBench")
        tenant.plan.predictions_per_minute = 2_000_000_000  # the rate limit is not what is measured here
        tenant.plan.save()
        trained = {}
        for template, kind, label, features in JOBS:
            print(f"training {template} on {args.rows} {kind} rows ...", flush=True)
            dataset = dataset_from_sample(tenant, kind, args.rows, label)
            version = train(tenant, dataset, template, label, features, args.epochs)
            if "explanation" not in version.manifest:
                raise SystemExit(f"{template}: the version has no explanation in its manifest")
            trained[template] = (version, instances(dataset, version, args.requests + 1))
        port = free_port()
        serving_env = dict(os.environ) | {"SERVING_CACHE_DIR": str(Path(env["BENCH_WORK_DIR"]) / "model-cache")}
        command = [sys.executable, "manage.py", "serve_models", "--host", "127.0.0.1", "--port", str(port)]
        with open(LOGS / "serving.log", "wb") as log:
            process = subprocess.Popen(
                command, cwd=ROOT, env=serving_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            wait_ready(process, port)
            client = Client(port, key)
            for template, (version, rows) in trained.items():
                path = f"/v1/models/{version.model.name}/versions/{version.version}"
                first_predict, _ = client.post(f"{path}:predict", {"instances": rows[:1]})
                first_explain, _ = client.post(f"{path}:explain", {"instances": rows[:1]})
                predict, explain, error = [], [], 0.0
                for row in rows[1:]:
                    seconds, _ = client.post(f"{path}:predict", {"instances": [row]})
                    predict.append(seconds)
                    seconds, answer = client.post(f"{path}:explain", {"instances": [row]})
                    explain.append(seconds)
                    error = max(error, answer["explanations"][0]["attributions"][0]["approximation_error"])
                report.append(
                    {
                        "template": template,
                        "runtime": version.manifest.get("runtime"),
                        "first_predict": first_predict,
                        "first_explain": first_explain,
                        "predict": (statistics.median(predict), quantile(predict, 0.9)),
                        "explain": (statistics.median(explain), quantile(explain, 0.9)),
                        "error": error,
                    }
                )
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
    print(f"\nbatch 1, one client, {args.requests} warm requests of each kind (ms: median / p90)")
    print(f"{'template':20} {'predicts on':12} {'predict':>15} {'explain':>15} {'ratio':>7} {'first explain':>14} "
          f"{'max approx. error':>18}")  # fmt: skip
    for row in report:
        (pm, p90), (em, e90) = row["predict"], row["explain"]
        print(
            f"{row['template']:20} {row['runtime']:12} {pm * 1e3:7.2f} / {p90 * 1e3:5.2f} {em * 1e3:7.2f} / "
            f"{e90 * 1e3:5.2f} {em / pm:6.1f}x {row['first_explain']:13.2f}s {row['error']:18.2g}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
