#!/usr/bin/env python
"""Serving process (compiled and TensorFlow paths) vs MLflow vs the in-process limits, on the seed model (one run).

    .venv/bin/python bench/serving.py [--seconds 8] [--rows 5000] [--epochs 2] [--versions 10]

Starts its own SeaweedFS (``--s3-port``, 18433) and SQLite, trains the seed
model (``sequence_ctr`` with its default layer sizes) through the platform's
own trainer so a version is published to the registry, then measures:

- the serving process (``manage.py serve_models``, a subprocess): the cold
  load of the version (first request: download, sha256, TensorFlow load) and
  batch-1 requests at concurrency 1, 8 and 32 (TF Serving REST ``:predict``);
- MLflow (``mlflow models serve``, its default worker count) serving the same
  SavedModel as a pyfunc model, at the same concurrencies. MLflow lives in its
  own venv, ``var/bench/mlflow-venv`` from ``bench/requirements-mlflow.txt``,
  created when missing; it is never a project requirement;
- the in-process limit: ``serving_default`` called in a loop in a plain
  process, at batch 1 and at the mean batch the batcher formed at c=32;
- memory: ``serving_model_memory_bytes`` of the version and of ``--versions``
  re-published copies loaded side by side, the process RSS, and how many
  seed-model versions fit in a 2 GiB budget (``--verify-fit`` loads that
  many and compares the cache's accounting with the process RSS).

The load generator (``bench/_loadgen.py``) is a separate process with one
keep-alive connection per concurrent client, rotating over real sample
sequences, one instance per request; only 200 answers count. Prints one
table and the targets with PASS/FAIL. Exits 0 when everything was measured
(whatever the verdicts: it is a report), 2 when something could not be.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import random
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

# This file is bench/serving.py, and Python puts its folder first on sys.path: "import serving" (the Django
# app, also imported by Django itself) would find this file instead. The project goes first, the bench's
# helpers (_stack, model_quality) after it.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != HERE]
sys.path.insert(0, str(HERE.parent))
sys.path.append(str(HERE))

from _stack import ROOT, bench_tenant, embedded_stack  # noqa: E402
from model_quality import dataset_from_sample, train  # noqa: E402

MODEL = "ctr"
TF_MODEL = "ctr-tensorflow"  # the same files without the compiled artifact: the TensorFlow path
BUDGET = 2 * 1024**3
MLFLOW_VENV = ROOT / "var" / "bench" / "mlflow-venv"
MLFLOW_REQUIREMENTS = HERE / "requirements-mlflow.txt"
LOGS = ROOT / "var" / "bench" / "serving-last"
CONCURRENCIES = (1, 8, 32)


class Unmeasured(Exception):
    """Something the report needs could not be measured (the run exits 2)."""


# --- Processes ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """A server subprocess in its own session, stopped by its process group id (MLflow forks uvicorn)."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.log = LOGS / f"{name}.log"
        with open(self.log, "wb") as handle:
            self.process = subprocess.Popen(
                command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_http(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise Unmeasured(f"{self.name} exited ({self.process.returncode}); see {self.log}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise Unmeasured(f"{self.name} was not ready at {url} within {timeout:.0f} s; see {self.log}")

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
            except ProcessLookupError:
                pass

    def odd_lines(self) -> list[str]:
        """Errors and warnings the server logged (the report shows them: a quiet log is part of the result)."""
        pattern = re.compile(r"\b(ERROR|WARNING|CRITICAL)\b|Traceback|Exception")
        banner = "before absl::InitializeLog()"  # TensorFlow's start-up notice, on every start
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines() if pattern.search(line) and banner not in line]


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in the group (MLflow's uvicorn is a child of the CLI)."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle (from /proc/stat): what else ran beside the bench shows up here."""
    with open("/proc/stat") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise Unmeasured(f"no VmRSS for process {pid}")


# --- HTTP ---------------------------------------------------------------------


def post(url: str, body: dict, headers: dict[str, str] | None = None) -> tuple[int, dict, float]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"} | (headers or {}),
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    return status, json.loads(raw or b"{}"), time.perf_counter() - started


def scrape(base: str) -> dict[str, float]:
    """``/metrics`` as {'name{labels}': value}."""
    from tests.support.serving import parse_metrics

    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        return parse_metrics(response.read().decode())


def model_metric(name: str, tenant_id, model: str, version: int) -> str:
    """The key of a per-version series in ``scrape``'s dict (labelled by tenant id, never the slug; labels sorted)."""
    return f'{name}{{model="{model}",tenant="{tenant_id}",version="{version}"}}'


def probabilities(predictions: list) -> list[float]:
    """P(click) per row from either server's answer (the serving process also names the label: a dict per row)."""
    out = []
    for row in predictions:
        while isinstance(row, list) and len(row) == 1:
            row = row[0]
        out.append(float(row["probability"] if isinstance(row, dict) else row))
    return out


# --- Steps --------------------------------------------------------------------


def mlflow_pins() -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in MLFLOW_REQUIREMENTS.read_text().splitlines())
    return [line for line in lines if "==" in line]


def mlflow_venv(python: str) -> str:
    """The MLflow venv's python, created from the pinned requirements when missing or not importable."""
    pins = dict(pin.split("==", 1) for pin in mlflow_pins())
    venv_python = MLFLOW_VENV / "bin" / "python"
    probe = "import json, mlflow, tensorflow; print(json.dumps([mlflow.__version__, tensorflow.__version__]))"

    def works() -> bool:
        if not venv_python.exists():
            return False
        found = subprocess.run([venv_python, "-c", probe], capture_output=True, text=True, check=False)
        lines = found.stdout.strip().splitlines()
        return (
            found.returncode == 0 and bool(lines) and json.loads(lines[-1]) == [pins["mlflow"], pins["tensorflow-cpu"]]
        )

    if not works():
        print(f"creating {MLFLOW_VENV} from {MLFLOW_REQUIREMENTS.relative_to(ROOT)} (once; a few minutes)", flush=True)
        subprocess.run([python, "-m", "venv", "--clear", MLFLOW_VENV], check=True)
        subprocess.run([venv_python, "-m", "pip", "install", "--quiet", "-r", MLFLOW_REQUIREMENTS], check=True)
        if not works():
            raise Unmeasured(f"{MLFLOW_VENV} does not import the pinned mlflow and tensorflow-cpu")
    return str(venv_python)


def mlflow_default_workers(venv_python: str) -> int:
    """The worker count ``mlflow models serve`` uses when not told (read from this version's --help)."""
    mlflow = str(Path(venv_python).parent / "mlflow")
    text = subprocess.run([mlflow, "models", "serve", "--help"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"--workers\b.*?\(default:\s*(\d+)\)", text, re.DOTALL)
    if not found:
        raise Unmeasured("mlflow models serve --help names no default worker count")
    return int(found.group(1))


def loadgen(url: str, bodies: Path, headers: list[str], concurrency: int, args, server: Service) -> dict:
    """One load level; also how many cores the server used meanwhile (CPU time / wall time, warm-up included)."""
    command = [
        sys.executable,
        str(HERE / "_loadgen.py"),
        "--url",
        url,
        "--body-file",
        str(bodies),
        "--concurrency",
        str(concurrency),
        "--seconds",
        str(args.seconds),
        "--warmup",
        str(args.warmup),
    ]
    for header in headers:
        command += ["--header", header]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu, busy, started = group_cpu_seconds(server.pid), machine_busy_seconds(), time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=args.seconds + 120)
    wall = time.monotonic() - started
    server_cores = (group_cpu_seconds(server.pid) - cpu) / wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    other_cores = max(0.0, (machine_busy_seconds() - busy - client) / wall - server_cores)
    if done.returncode != 0:
        raise Unmeasured(f"load generator failed on {url}: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1]) | {
        "server_cores": server_cores,
        "other_cores": other_cores,
    }
    if not result["requests"]:
        raise Unmeasured(f"no 200 answers from {url} at c={concurrency}: {result}")
    return result


def in_process(model_dir: Path, inputs: Path, batch_sizes: list[int], seconds: float, *, compiled: bool) -> dict:
    command = [
        sys.executable,
        str(HERE / "_inprocess.py"),
        *(["--compiled"] if compiled else []),
        "--model-dir",
        str(model_dir),
        "--inputs-file",
        str(inputs),
        "--batch-sizes",
        ",".join(map(str, batch_sizes)),
        "--seconds",
        str(seconds),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120 + 4 * seconds)
    if done.returncode != 0:
        raise Unmeasured(f"in-process run failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def sample_sequences(dataset, column: str, count: int) -> list[str]:
    """Random rows of the stored dataset's feature column (what clients would send)."""
    from core import storage

    rows = csv.DictReader(io.StringIO(storage.get_bytes(dataset.object_key).decode("utf-8")))
    values = [row[column] for row in rows]
    return random.Random(7).sample(values, min(count, len(values)))


def download_version(version, target: Path) -> Path:
    """The published SavedModel files (those the manifest lists), as the serving process would fetch them."""
    from core import storage

    for name in version.manifest["files"]:
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            storage.download_stream(version.object_prefix + name, handle)
    return target


def publish_copy(source, export_dir: Path, *, model_name: str | None = None, tensorflow_only: bool = False):
    """A new version with the same files: the registry's own publish, no training.

    ``model_name``: under another registered model (so the copy has its own routes); ``tensorflow_only``: without
    the compiled artifact, as a version published before compiled serving is (TensorFlow answers it).
    """
    from django.db import transaction

    from serving import publishing
    from serving.models import ModelVersion, RegisteredModel

    with transaction.atomic():
        if model_name:
            model, _ = RegisteredModel.objects.get_or_create(tenant_id=source.tenant_id, name=model_name)
            model = RegisteredModel.objects.select_for_update().get(pk=model.pk)
        else:
            model = RegisteredModel.objects.select_for_update().get(pk=source.model_id)
        model.last_version += 1
        model.save(update_fields=["last_version"])
        row = ModelVersion.objects.create(
            tenant_id=source.tenant_id,
            model=model,
            version=model.last_version,
            dataset_id=source.dataset_id,
            template=source.template,
            object_prefix=publishing.version_prefix(source.tenant_id, model.name, model.last_version),
        )
    dropped = {"model_name", "version", "files", "created_at", "metrics"}
    if tensorflow_only:
        dropped |= {"runtime", "runtime_reason", "compiled", "parity"}
        plain = export_dir.with_name(export_dir.name + "-tensorflow")
        if not plain.exists():
            shutil.copytree(export_dir, plain, ignore=shutil.ignore_patterns("compiled"))
        export_dir = plain
    fields = {k: v for k, v in source.manifest.items() if k not in dropped}
    return publishing.publish(version=row, export_dir=export_dir, manifest_fields=fields, metrics=source.metrics)


def predict_version(base: str, key: str, number: int, sequence: str, tries: float = 10.0) -> float:
    """Seconds for one request on a named version, retrying while the serving process has not seen it yet."""
    deadline = time.monotonic() + tries
    while True:
        status, body, seconds = post(
            f"{base}/v1/models/{MODEL}/versions/{number}:predict",
            {"instances": [sequence]},
            {"Authorization": f"Bearer {key}"},
        )
        if status == 200:
            return seconds
        if status != 404 or time.monotonic() > deadline:  # 404: routes are cached for SERVING_ROUTE_TTL_SECONDS
            raise Unmeasured(f"version {number}: {status} {body}")
        time.sleep(0.25)


def batch_delta(before: dict[str, float], after: dict[str, float]) -> dict:
    count = after["serving_batch_rows_count"] - before["serving_batch_rows_count"]
    rows = after["serving_batch_rows_sum"] - before["serving_batch_rows_sum"]
    buckets, previous = {}, 0.0
    for name in sorted(
        (n for n in after if n.startswith("serving_batch_rows_bucket")),
        key=lambda n: math.inf if "+Inf" in n else float(n.split('"')[1]),
    ):
        cumulative = after[name] - before.get(name, 0.0)
        buckets[name.split('"')[1]] = int(cumulative - previous)
        previous = cumulative
    return {"batches": int(count), "rows": int(rows), "mean": rows / count if count else float("nan"), "le": buckets}


# --- The run ------------------------------------------------------------------


def run(args, base_env: dict[str, str], report: dict) -> None:
    venv_python = mlflow_venv(sys.executable)
    report["mlflow_workers"] = mlflow_default_workers(venv_python)
    with embedded_stack(s3_port=args.s3_port, name="serving") as env:
        from django.conf import settings

        from serving.models import ModelVersion

        work = Path(env["BENCH_WORK_DIR"])
        report["batching"] = (
            settings.SERVING_MAX_BATCH_SIZE,
            settings.SERVING_BATCH_WAIT_MICROSECONDS,
            settings.SERVING_CONCURRENT_BATCHES,
            settings.SERVING_TF_THREADS,
        )
        tenant, key = bench_tenant("ServingBench")
        tenant.plan.predictions_per_minute = 2_000_000_000  # the rate limit is not what is measured here
        tenant.plan.save()
        print(f"training sequence_ctr on {args.rows} ctr rows, {args.epochs} epochs ...", flush=True)
        dataset = dataset_from_sample(tenant, "ctr", args.rows, "clicked")
        job, report["train_seconds"] = train(tenant, dataset, "sequence_ctr", MODEL, "clicked", {"epochs": args.epochs})
        version = ModelVersion.objects.get(job=job)
        if version.manifest.get("runtime") != "onnxruntime":
            raise Unmeasured(f"the version was not compiled: {version.manifest.get('runtime_reason')}")
        report["parity"] = version.manifest["parity"]
        column = job.feature_columns[0]
        report["auc"] = job.metrics.get("auc")
        report["model_bytes"] = version.size_bytes
        report["onnx_bytes"] = version.manifest["compiled"]["model"]["size"]
        export = download_version(version, work / "export" / "v1")
        publish_copy(version, export, model_name=TF_MODEL, tensorflow_only=True)

        sequences = sample_sequences(dataset, column, args.samples)
        inputs = work / "sequences.json"
        inputs.write_text(json.dumps(sequences))
        serving_bodies, mlflow_bodies = work / "serving.jsonl", work / "mlflow.jsonl"
        serving_bodies.write_text("".join(json.dumps({"instances": [s]}) + "\n" for s in sequences))
        mlflow_bodies.write_text(
            "".join(json.dumps({"dataframe_split": {"columns": [column], "data": [[s]]}}) + "\n" for s in sequences)
        )
        auth = {"Authorization": f"Bearer {key}"}
        auth_header = [f"Authorization: Bearer {key}"]
        serving_env = dict(os.environ) | {"SERVING_CACHE_DIR": str(work / "model-cache"), "PYTHONUNBUFFERED": "1"}

        def start_serving(name: str, workers: int = 1) -> tuple[Service, str]:
            port = free_port()
            command = [sys.executable, "manage.py", "serve_models", "--host", "127.0.0.1", "--port", str(port)]
            command += ["--workers", str(workers)] if workers > 1 else []
            service = Service(name, command, serving_env, ROOT)
            services.append(service)
            started = time.monotonic()
            service.wait_http(f"http://127.0.0.1:{port}/v2/health/ready", timeout=180)
            report.setdefault("ready_seconds", {})[name] = time.monotonic() - started
            report.setdefault("commands", {})[name] = " ".join(command[1:])
            return service, f"http://127.0.0.1:{port}"

        services: list[Service] = []
        try:
            serving, base = start_serving("serving")
            time.sleep(1.0)  # let start-up settle (ONNX Runtime's import, the first database queries)
            report["serving_rss_idle"] = rss_bytes(serving.pid)

            # Cold load: the first request for the version (download + sha256 + session + first call).
            status, answer, report["cold_request_seconds"] = post(
                f"{base}/v1/models/{MODEL}/versions/{version.version}:predict", {"instances": [sequences[0]]}, auth
            )
            if status != 200:
                raise Unmeasured(f"first prediction: {status} {answer}")
            serving_prediction = probabilities(answer["predictions"])
            metrics = scrape(base)
            report["load_seconds_metric"] = metrics[
                model_metric("serving_model_load_seconds_total", tenant.id, MODEL, version.version)
            ]
            report["memory"] = {
                version.version: metrics[model_metric("serving_model_memory_bytes", tenant.id, MODEL, version.version)]
            }
            report["tensorflow_loaded_after_compiled"] = metrics["serving_tensorflow_loaded"]
            report["warm_request_seconds"] = post(
                f"{base}/v1/models/{MODEL}/versions/{version.version}:predict", {"instances": [sequences[0]]}, auth
            )[2]

            for concurrency in CONCURRENCIES:
                before = scrape(base)
                result = loadgen(
                    f"{base}/v1/models/{MODEL}:predict", serving_bodies, auth_header, concurrency, args, serving
                )
                result["batch"] = batch_delta(before, scrape(base))
                report["serving"][concurrency] = result
                print(f"serving (compiled) c={concurrency}: {summary(result)}", flush=True)
            report["serving_rss_after_load"] = rss_bytes(serving.pid)

            # The TensorFlow path beside it: the same files without the compiled artifact.
            status, answer, report["tensorflow_cold_seconds"] = post(
                f"{base}/v1/models/{TF_MODEL}:predict", {"instances": [sequences[0]]}, auth
            )
            if status != 200 or abs(probabilities(answer["predictions"])[0] - serving_prediction[0]) > 1e-5:
                raise Unmeasured(f"TensorFlow copy: {status} {answer} vs compiled {serving_prediction}")
            for concurrency in (1, 32):
                before = scrape(base)
                result = loadgen(
                    f"{base}/v1/models/{TF_MODEL}:predict", serving_bodies, auth_header, concurrency, args, serving
                )
                result["batch"] = batch_delta(before, scrape(base))
                report["serving_tensorflow"][concurrency] = result
                print(f"serving (TensorFlow) c={concurrency}: {summary(result)}", flush=True)
            report["serving_rss_with_tensorflow"] = rss_bytes(serving.pid)

            # Memory: more copies of the compiled version, side by side in the one process.
            rss_before = rss_bytes(serving.pid)
            copies = [publish_copy(version, export) for _ in range(args.versions)]
            time.sleep(settings.SERVING_ROUTE_TTL_SECONDS + 0.2)
            # Newest first: the request that refreshes the routes also preloads the new 'latest' (hot swap), and
            # timing another version behind that background load would count both loads.
            report["copy_cold_seconds"] = [
                predict_version(base, key, c.version, sequences[1]) for c in reversed(copies)
            ]
            metrics = scrape(base)
            for copy in copies:
                report["memory"][copy.version] = metrics[
                    model_metric("serving_model_memory_bytes", tenant.id, MODEL, copy.version)
                ]
            report["copy_load_seconds"] = [
                metrics[model_metric("serving_model_load_seconds_total", tenant.id, MODEL, c.version)] for c in copies
            ]
            report["rss_after_copies"] = rss_bytes(serving.pid)
            report["rss_growth_per_copy"] = (report["rss_after_copies"] - rss_before) / len(copies)
            report["cache_used_bytes"] = metrics["serving_cache_used_bytes"]
            report["loaded_models"] = sum(1 for n in metrics if n.startswith("serving_model_memory_bytes{"))
            report["fit"] = int(BUDGET // max(report["rss_growth_per_copy"], 1))

            if args.verify_fit:
                more = min(report["fit"], args.max_verify) - report["loaded_models"]
                print(f"verifying: publishing and loading {more} more copies ...", flush=True)
                extra = [publish_copy(version, export) for _ in range(max(0, more))]
                time.sleep(settings.SERVING_ROUTE_TTL_SECONDS + 0.2)
                rss_start = rss_bytes(serving.pid)
                for copy in reversed(extra):
                    predict_version(base, key, copy.version, sequences[1])
                metrics = scrape(base)
                report["verify"] = {
                    "added": len(extra),
                    "loaded": sum(1 for n in metrics if n.startswith("serving_model_memory_bytes{")),
                    "evictions": metrics["serving_model_unloads_total"],
                    "used": metrics["serving_cache_used_bytes"],
                    "rss": rss_bytes(serving.pid),
                    "rss_start": rss_start,
                }
            report["serving_log"] = serving.odd_lines()
            serving.stop()  # its cores back for the next measurements

            # Two worker processes behind one port vs the one above, at c=32 on the compiled version.
            two, two_base = start_serving("serving-2-workers", workers=2)
            report["workers_2"] = loadgen(
                f"{two_base}/v1/models/{MODEL}:predict", serving_bodies, auth_header, 32, args, two
            )
            print(f"serving --workers 2 c=32: {summary(report['workers_2'])}", flush=True)
            two.stop()

            # The peer: the same SavedModel as an MLflow pyfunc model, served by `mlflow models serve`.
            mlflow_model = work / "mlflow-model"
            plain_export = export.with_name(export.name + "-tensorflow")
            subprocess.run(
                [venv_python, str(HERE / "_mlflow_model.py"), "--saved-model", str(plain_export), "--column", column,
                 "--out", str(mlflow_model), "--requirements", *mlflow_pins()],
                check=True, capture_output=True, env=base_env, cwd=work,
            )  # fmt: skip
            mlflow_port = free_port()
            mlflow_env = base_env | {"PATH": f"{Path(venv_python).parent}:{base_env.get('PATH', '')}"}
            mlflow_command = [str(Path(venv_python).parent / "mlflow"), "models", "serve", "-m", str(mlflow_model),
                              "--env-manager", "local", "-h", "127.0.0.1", "-p", str(mlflow_port)]  # fmt: skip
            report["mlflow_command"] = "mlflow " + " ".join(shlex.quote(a) for a in mlflow_command[1:])
            mlflow = Service("mlflow", mlflow_command, mlflow_env, work)
            services.append(mlflow)
            mlflow.wait_http(f"http://127.0.0.1:{mlflow_port}/ping", timeout=300)
            status, answer, _ = post(
                f"http://127.0.0.1:{mlflow_port}/invocations", json.loads(mlflow_bodies.read_text().splitlines()[0])
            )
            if status != 200:
                raise Unmeasured(f"MLflow /invocations: {status} {answer}")
            mlflow_prediction = probabilities(answer["predictions"])
            report["prediction_check"] = (serving_prediction, mlflow_prediction)
            if len(mlflow_prediction) != 1 or abs(mlflow_prediction[0] - serving_prediction[0]) > 1e-4:
                raise Unmeasured(f"MLflow answers {mlflow_prediction}, the serving process {serving_prediction}")
            for concurrency in CONCURRENCIES:
                result = loadgen(
                    f"http://127.0.0.1:{mlflow_port}/invocations", mlflow_bodies, [], concurrency, args, mlflow
                )
                report["mlflow"][concurrency] = result
                print(f"MLflow c={concurrency}: {summary(result)}", flush=True)
            mlflow.stop()  # its CPU back before the in-process limits are measured

            # The in-process limits, at batch 1 and at the batch the batcher formed at c=32, for both runtimes.
            for name, compiled, formed in (
                ("inprocess", True, report["serving"][32]["batch"]["mean"]),
                ("inprocess_tensorflow", False, report["serving_tensorflow"][32]["batch"]["mean"]),
            ):
                batch_n = max(1, round(formed))
                report[f"{name}_batch_n"] = batch_n
                limit = in_process(export, inputs, sorted({1, batch_n}), args.seconds, compiled=compiled)
                report[name] = {r["batch_size"]: r for r in limit["results"]}
                print(f"{name} ({limit['runtime']}): {limit['results']}", flush=True)
        finally:
            for service in reversed(services):
                service.stop()


def summary(result: dict) -> str:
    return (
        f"{result['rps']:.0f} req/s, p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
        f"{result['errors']} errors"
    )


def histogram(batch: dict) -> str:
    """The non-empty buckets of serving_batch_rows as row ranges ('17-32: 82'), so a mean hides nothing."""
    parts, low = [], 1
    for bound, count in batch["le"].items():
        high = math.inf if bound == "+Inf" else int(float(bound))
        if count:
            span = str(high) if high == low else f"{low}-{'' if high == math.inf else high}"
            parts.append(f"{span}: {count}")
        low = high + 1 if high != math.inf else low
    return ", ".join(parts) or "none"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_report(args, report: dict) -> None:
    mb = 1024**2
    workers = report["mlflow_workers"]
    print()
    print(
        f"Seed model sequence_ctr (default layer sizes), {args.rows} ctr rows, {args.epochs} epochs "
        f"(train {report['train_seconds']:.0f} s, AUC {report['auc']:.3f}); "
        f"published {report['model_bytes'] / mb:.2f} MB (ONNX core {report['onnx_bytes'] / mb:.2f} MB); parity gate "
        f"{report['parity']['rows']} rows, max difference {report['parity']['max_abs_difference']:.1e}; "
        f"{os.cpu_count()} cores; {args.seconds:g} s per level after {args.warmup:g} s warm-up; batch-1 requests"
    )
    max_batch, wait, concurrent, threads = report["batching"]
    print(
        f"serving: {report['commands']['serving']} (1 process; SERVING_MAX_BATCH_SIZE {max_batch}, "
        f"SERVING_BATCH_WAIT_MICROSECONDS {wait}, SERVING_CONCURRENT_BATCHES {concurrent}, "
        f"SERVING_TF_THREADS {threads or 'auto'})"
    )
    print(
        f"MLflow:  {report['mlflow_command']} (its defaults: --workers = {workers} uvicorn "
        f"worker{'s' * (workers != 1)}, access log on)"
    )
    print(
        "cores: CPU time / wall time during a level (warm-up included) of the server's processes, of the load "
        "generator, and of everything else on the machine"
    )
    print()
    header = (
        f"{'':40} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'server':>7} {'client':>7} {'other':>7}  note"
    )
    print(header)
    print(f"{'':40} {'':>9} {'':>8} {'':>8} {'':>7} {'cores':>7} {'cores':>7} {'cores':>7}")
    print("-" * (len(header) + 30))

    def line(name: str, r: dict, note: str) -> None:
        print(
            f"{name:40} {r['rps']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['errors']:7d} "
            f"{r['server_cores']:7.2f} {r['client_cores']:7.2f} {r['other_cores']:7.2f}  {note}"
        )

    for side, title in (("serving", "serving, compiled"), ("serving_tensorflow", "serving, TensorFlow")):
        for concurrency, r in sorted(report[side].items()):
            line(f"{title} c={concurrency}", r, f"mean batch {r['batch']['mean']:.1f} rows ({r['batch']['batches']})")
    line("serving, compiled, --workers 2 c=32", report["workers_2"], "")
    for concurrency in CONCURRENCIES:
        r = report["mlflow"][concurrency]
        name = f"MLflow c={concurrency} ({workers} worker{'s' * (workers != 1)}, default)"
        line(name, r, r["sample_error"][:60] if r["errors"] else "")
    for side, title in (("inprocess", "in-process ONNX Runtime"), ("inprocess_tensorflow", "in-process TensorFlow")):
        for size, r in sorted(report[side].items()):
            name = f"{title} batch {size}"
            print(
                f"{name:40} {r['rows_per_s']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {'-':>7} {r['cores']:7.2f} "
                f"{'-':>7} {'-':>7}  rows/s; p50/p99 per call; {r['calls_per_s']:.0f} calls/s"
            )
    print()
    for concurrency in CONCURRENCIES[1:]:
        print(f"batches formed at c={concurrency} (rows: count): {histogram(report['serving'][concurrency]['batch'])}")
    print()
    print("Targets")
    c32, c1 = report["serving"][32], report["serving"][1]
    ratio = c32["rps"] / report["mlflow"][32]["rps"]
    tf_ratio = report["serving_tensorflow"][32]["rps"] / report["mlflow"][32]["rps"]
    print(
        f" (i)    serving c=32 / MLflow c=32 = {ratio:.1f}x (target >= 30x)  {verdict(ratio >= 30)}; "
        f"the TensorFlow path {tf_ratio:.1f}x"
    )
    limit = report["inprocess"][report["inprocess_batch_n"]]
    share = c32["rps"] / limit["rows_per_s"]
    print(
        f" (ii)   serving c=32 / in-process ONNX Runtime at batch {report['inprocess_batch_n']} = {c32['rps']:.0f} / "
        f"{limit['rows_per_s']:.0f} rows/s = {share:.0%} (target >= 60%)  {verdict(share >= 0.6)}"
    )
    single = report["inprocess"][1]
    p50_gap, p99_gap = c1["p50_ms"] - single["p50_ms"], c1["p99_ms"] - single["p99_ms"]
    print(
        f" (iii)  serving at c=1 - in-process ONNX Runtime single call: p50 {c1['p50_ms']:.2f} - "
        f"{single['p50_ms']:.2f} = {p50_gap:+.2f} ms (target <= 0.5)  {verdict(p50_gap <= 0.5)}; p99 "
        f"{c1['p99_ms']:.2f} - {single['p99_ms']:.2f} = {p99_gap:+.2f} ms (target <= 2)  {verdict(p99_gap <= 2)}"
    )
    cold = report["cold_request_seconds"]
    print(
        f" (iv)   cold load of the seed model: first request {cold:.3f} s (load {report['load_seconds_metric']:.3f} s) "
        f"(target <= 0.3 s)  {verdict(cold <= 0.3)}; warm {report['warm_request_seconds'] * 1000:.1f} ms; copies: "
        f"median first request {statistics.median(report['copy_cold_seconds']):.3f} s; the TensorFlow path's first "
        f"request {report['tensorflow_cold_seconds']:.2f} s (TensorFlow imported then)"
    )
    idle = report["serving_rss_idle"]
    print(
        f" (v)    serving RSS idle {idle / mb:.0f} MB (target <= 150 MB)  {verdict(idle <= 150 * mb)}; after the "
        f"compiled load runs {report['serving_rss_after_load'] / mb:.0f} MB (TensorFlow loaded: "
        f"{report['tensorflow_loaded_after_compiled']:.0f}); after the TensorFlow path "
        f"{report['serving_rss_with_tensorflow'] / mb:.0f} MB"
    )
    memory = sorted(report["memory"].values())
    growth = report["rss_growth_per_copy"]
    print(
        f" (vi)   versions in a 2 GiB budget by RSS: {report['fit']} ({growth / mb:.2f} MB of RSS per loaded copy, "
        f"{len(memory)} copies; serving_model_memory_bytes median {statistics.median(memory) / mb:.2f} MB) "
        f"(target >= 1,000)  {verdict(report['fit'] >= 1000)}"
    )
    if "verify" in report:
        v = report["verify"]
        real = (v["rss"] - v["rss_start"]) / v["added"] if v["added"] else float("nan")
        print(
            f"        verified: loaded {v['added']} more ({v['loaded']} in all, {v['evictions']:.0f} unloads), "
            f"{real / mb:.2f} MB of RSS each, process RSS {v['rss'] / mb:.0f} MB; cache accounting "
            f"{v['used'] / mb:.0f} MB of {BUDGET // mb}"
        )
    two = report["workers_2"]
    scale = two["rps"] / c32["rps"]
    bound = two["client_cores"] + two["server_cores"] > (os.cpu_count() or 1) - 0.25
    print(
        f" (vii)  --workers 2 / --workers 1 at c=32 = {two['rps']:.0f} / {c32['rps']:.0f} = {scale:.2f}x (target >= "
        f"1.6x where the client is not the bottleneck)  {verdict(scale >= 1.6)}"
        + (
            f"; here the load generator used {two['client_cores']:.2f} of {os.cpu_count()} cores: the machine, not "
            "the server, is the bottleneck"
            if bound
            else ""
        )
    )
    odd = report.get("serving_log", [])
    print()
    print(f"serving process log: {len(odd)} error/warning line(s) (full log: {LOGS.relative_to(ROOT)}/serving.log)")
    for entry in odd[:10]:
        print(f"  {entry[:200]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per load level")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each level")
    parser.add_argument("--rows", type=int, default=5000, help="ctr sample rows to train on")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--versions", type=int, default=10, help="copies of the version loaded for the memory figure")
    parser.add_argument("--samples", type=int, default=512, help="distinct request inputs (dataset rows)")
    parser.add_argument("--s3-port", type=int, default=18433)
    parser.add_argument("--verify-fit", action="store_true", help="load as many versions as should fit in 2 GiB")
    parser.add_argument("--max-verify", type=int, default=1500, help="at most this many versions for --verify-fit")
    args = parser.parse_args()
    if args.versions < 1 or args.seconds <= 0:
        parser.error("--versions must be at least 1 and --seconds positive")
    print("command: " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]), flush=True)
    load_before = os.getloadavg()[0]
    if LOGS.exists():
        shutil.rmtree(LOGS)
    LOGS.mkdir(parents=True)
    base_env = dict(os.environ)  # before the stack's settings: the helper processes need none of them
    report: dict = {"serving": {}, "serving_tensorflow": {}, "mlflow": {}}
    try:
        run(args, base_env, report)
    except Exception as exc:  # noqa: BLE001 - any failure means a figure is missing: say which, exit 2
        detail = getattr(exc, "stderr", None)
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        if not isinstance(exc, Unmeasured):
            traceback.print_exc()
        print(f"could not measure: {exc!r}" + (f"\n{detail[-3000:]}" if detail else ""), file=sys.stderr)
        print(f"logs of the servers: {LOGS.relative_to(ROOT)}/", file=sys.stderr)
        return 2
    print_report(args, report)
    other = max(r["other_cores"] for side in ("serving", "serving_tensorflow", "mlflow") for r in report[side].values())
    print(
        f"machine: load average {load_before:.2f} when the bench started; at most {other:.2f} cores used by "
        "other processes during a load level"
        + (" -- something else shared the cores: rates and latencies are not clean" if other > 0.25 else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
