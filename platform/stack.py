#!/usr/bin/env python
"""Embedded-stack launcher: the whole platform on one machine with no servers installed.

    python platform/stack.py up      # S3 + API on :8000 + worker, in the foreground
    python platform/stack.py demo    # start what is missing, run the main job, stop, exit 0
    python platform/stack.py s3 start|stop

Defaults: SQLite, Celery's filesystem transport, SeaweedFS (``weed mini``)
on 127.0.0.1:8333. Any of DATABASE_URL, CELERY_BROKER_URL, S3_* in the
environment take precedence. Only processes this script started are stopped,
by their process ids.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(1, str(ROOT))  # after the stdlib-first entries: `import platform` stays the stdlib's

from core.s3server import S3Server, port_is_open, start_s3_server, stop_pid  # noqa: E402

PYTHON = sys.executable
BIN = Path(PYTHON).parent
API = "127.0.0.1:8000"
SERVING = "127.0.0.1:8001"


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    env.setdefault("DEBUG", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def var_dir(env: dict[str, str]) -> Path:
    return Path(env.get("PLATFORM_VAR_DIR", ROOT / "var"))


def s3_endpoint(env: dict[str, str]) -> str:
    return env.get("S3_ENDPOINT_URL", "http://127.0.0.1:8333")


def ensure_s3(env: dict[str, str]) -> S3Server | None:
    """Start the local S3 server unless one already answers; returns it when we started it."""
    parsed = urlparse(s3_endpoint(env))
    if port_is_open(parsed.hostname or "127.0.0.1", parsed.port or 80):
        print(f"S3: using the server already at {s3_endpoint(env)}")
        return None
    if parsed.hostname not in {"127.0.0.1", "localhost"}:
        raise SystemExit(f"S3_ENDPOINT_URL={s3_endpoint(env)} does not answer")
    server = start_s3_server(
        data_dir=var_dir(env) / "s3",
        access_key=env.get("S3_ACCESS_KEY_ID", "platform-dev-access-key"),
        secret_key=env.get("S3_SECRET_ACCESS_KEY", "platform-dev-secret-key"),
        s3_port=parsed.port or 8333,
    )
    print(f"S3: started SeaweedFS at {server.endpoint_url} (pid {server.pid})")
    return server


def manage(env: dict[str, str], *args: str, capture: bool = False) -> str:
    result = subprocess.run(
        [PYTHON, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        check=True,
        text=True,
        stdout=subprocess.PIPE if capture else None,
    )
    return result.stdout or ""


def prepare(env: dict[str, str]) -> None:
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "init_storage")


def start_api(env: dict[str, str]) -> subprocess.Popen:
    process = subprocess.Popen([PYTHON, str(ROOT / "manage.py"), "runserver", API, "--noreload"], env=env, cwd=ROOT)
    wait_http(f"http://{API}/healthz", process)
    return process


def start_serving(env: dict[str, str]) -> subprocess.Popen:
    """The prediction process (TF Serving REST + KServe v2), apart from the API."""
    host, port = SERVING.split(":")
    process = subprocess.Popen(
        [PYTHON, str(ROOT / "manage.py"), "serve_models", "--host", host, "--port", port], env=env, cwd=ROOT
    )
    wait_http(f"http://{SERVING}/v2/health/ready", process)
    return process


def start_worker(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [
            str(BIN / "celery"),
            "-A",
            "config",
            "worker",
            "-Q",
            "default,cpu,gpu",
            "-c",
            "1",
            "-n",
            f"embedded-{os.getpid()}@%h",
            "--loglevel=WARNING",
        ],
        env=env,
        cwd=ROOT,
    )


def wait_http(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"process for {url} exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.3)
    raise SystemExit(f"{url} did not answer within {timeout}s")


def api_call(method: str, path: str, key: str, body: dict | None = None, *, host: str = API) -> dict:
    request = urllib.request.Request(
        f"http://{host}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def upload_dataset(path: Path, key: str, *, name: str, label_column: str) -> dict:
    """POST a file as multipart/form-data (small demo files: built in memory)."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"\r\n\r\n{value}\r\n'.encode()
        for field, value in (("name", name), ("label_column", label_column))
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        f"Content-Type: text/csv\r\n\r\n".encode()
        + path.read_bytes()
        + b"\r\n"
    )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        f"http://{API}/api/v1/datasets",
        method="POST",
        data=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def wait_for_dataset(dataset_id: str, key: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dataset = api_call("GET", f"/api/v1/datasets/{dataset_id}", key)
        if dataset["status"] not in {"validating", "uploading"}:
            return dataset
        time.sleep(0.5)
    raise SystemExit(f"dataset {dataset_id} was not validated within {timeout}s")


def wait_for_job(job_id: str, key: str, timeout: float = 900) -> dict:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        job = api_call("GET", f"/api/v1/jobs/{job_id}", key)
        progress = job.get("progress") or {}
        shown = (job["status"], progress.get("epoch"))
        if shown != last and job["status"] == "running" and progress:
            print(f"   running: epoch {progress.get('epoch')}/{progress.get('epochs')}")
            last = shown
        if job["status"] in {"succeeded", "failed", "cancelled"}:
            return job
        time.sleep(1)
    raise SystemExit(f"job {job_id} did not finish within {timeout}s")


def create_demo_tenant(env: dict[str, str], name: str) -> dict:
    out = manage(env, "create_tenant", "--name", name, "--owner-email", "demo@example.com", "--json", capture=True)
    return json.loads(out.strip().splitlines()[-1])


def probe_worker(env: dict[str, str], timeout: float = 90) -> dict:
    """Send the runtime probe to the worker and wait for its report in S3."""
    probe_id = uuid.uuid4().hex
    out = manage(env, "probe_worker", "--probe-id", probe_id, "--timeout", str(timeout), capture=True)
    return json.loads(out.strip().splitlines()[-1])


def stop_all(processes: list[subprocess.Popen], s3: S3Server | None) -> None:
    for process in reversed(processes):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    if s3 is not None:
        s3.stop()


def cmd_up(args) -> int:
    env = base_env()
    s3 = ensure_s3(env)
    processes: list[subprocess.Popen] = []
    try:
        prepare(env)
        tenant = create_demo_tenant(env, "Demo")
        processes.append(start_api(env))
        processes.append(start_worker(env))
        processes.append(start_serving(env))
        logins = json.loads(manage(env, "demo_logins", "--json", capture=True).strip().splitlines()[-1])
        print()
        print(f"Dashboard:  http://{API}/   sign in as {logins['owner']} / {logins['password']}")
        print(f"Admin:      http://{API}/admin/   sign in as {logins['operator']} / {logins['password']}")
        print(f"Status:     http://{API}/admin/status/   (workers, queues, serving processes)")
        print(f"API:        http://{API}/api/v1/   (OpenAPI docs: http://{API}/api/docs/)")
        print(f"Serving:    http://{SERVING}/v1/models/<name>:predict  and  /v2/models/<name>/infer")
        print(f"S3:         {s3_endpoint(env)}")
        print(f"Demo tenant {tenant['slug']}, API key: {tenant['api_key']}")
        print("Press Ctrl+C to stop.")
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while all(p.poll() is None for p in processes):
            time.sleep(1)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop_all(processes, s3)


def cmd_demo(args) -> int:
    env = base_env()
    s3 = ensure_s3(env)
    processes: list[subprocess.Popen] = []
    try:
        prepare(env)
        tenant = create_demo_tenant(env, f"Demo {time.strftime('%Y%m%d-%H%M%S')}")
        print(f"1. created tenant {tenant['slug']} ({tenant['tenant_id']})")
        print(f"   API key (shown once): {tenant['api_key']}")
        processes.append(start_api(env))
        processes.append(start_worker(env))
        processes.append(start_serving(env))
        me = api_call("GET", "/api/v1/tenant", tenant["api_key"])
        print(
            f"2. GET /api/v1/tenant -> tenant {me['tenant']['slug']}, caller role {me['caller']['role']}, "
            f"scopes {','.join(me['caller']['scopes'])}"
        )
        report = probe_worker(env)
        print(
            f"3. Celery worker answered on queue 'default': {report['hostname']} "
            f"(platform.system()={report['platform_system']}, tensorflow loaded={report['tensorflow_loaded']})"
        )
        clicks = var_dir(env) / "demo" / "clicks.csv"
        clicks.parent.mkdir(parents=True, exist_ok=True)
        manage(env, "make_sample_data", "--kind", "ctr", "--rows", "5000", "--seed", "1", "--out", str(clicks))
        created = upload_dataset(clicks, tenant["api_key"], name="clicks", label_column="clicked")
        print(
            f"4. uploaded {clicks.name} ({created['size_bytes']} bytes) as dataset {created['name']} "
            f"v{created['version']}, status {created['status']}"
        )
        dataset = wait_for_dataset(created["id"], tenant["api_key"])
        if dataset["status"] != "ready":
            raise SystemExit(f"dataset validation failed: {dataset['errors']}")
        columns = ", ".join(f"{c['name']}:{c['type']}" for c in dataset["schema"])
        sequence = dataset["stats"]["columns"]["item_sequence"]
        print(
            f"5. validated by the worker: {dataset['row_count']} rows; schema {columns}; "
            f"labels {dataset['stats']['label_distribution']}; item vocabulary {sequence['vocabulary_size']}"
        )
        print(
            f"   stored at s3://{env.get('S3_BUCKET', 'mlplatform')}/tenants/{tenant['tenant_id']}/datasets/"
            f"{dataset['id']}/data.csv (sha256 {dataset['sha256'][:12]}…)"
        )
        job = api_call(
            "POST",
            "/api/v1/jobs",
            tenant["api_key"],
            {
                "dataset": dataset["id"],
                "template": "sequence_ctr",
                "model_name": "clicks-ctr",
                "label_column": "clicked",
                "params": {"epochs": 3},
                "seed": 1,
            },
        )
        print(
            f"6. training job {job['id']} queued: sequence_ctr (Embedding 128 -> Conv1D 64 -> MaxPool -> "
            "LSTM 128 -> sigmoid), 3 epochs"
        )
        job = wait_for_job(job["id"], tenant["api_key"])
        if job["status"] != "succeeded":
            raise SystemExit(f"training {job['status']}: {job['error_message']}")
        metrics = job["metrics"]
        print(
            f"7. trained on {job['device']} in {job['compute_seconds']:.0f} s: validation AUC {metrics['auc']:.3f}, "
            f"accuracy {metrics['accuracy']:.3f}, F1 {metrics['f1']:.3f}, log loss {metrics['log_loss']:.3f}"
        )
        print(
            f"   published {job['model_name']} v{job['model_version']} at s3://{env.get('S3_BUCKET', 'mlplatform')}/"
            f"tenants/{tenant['tenant_id']}/models/{job['model_name']}/{job['model_version']}/ "
            "(SavedModel + manifest.json)"
        )
        predict_over_http(tenant["api_key"], job["model_name"], job["model_version"], clicks)
        print("demo finished: the platform is up on the embedded defaults.")
        return 0
    finally:
        stop_all(processes, s3)


def predict_over_http(key: str, model_name: str, version: int, sample_csv: Path) -> None:
    """Promote the new version to production, then ask the serving process about two real visitors."""
    api_call("PUT", f"/api/v1/models/{model_name}/aliases/production", key, {"version": version})
    print(f"8. promoted {model_name} v{version}: alias production -> v{version} (PUT /api/v1/models/.../aliases)")
    rows = list(csv.DictReader(sample_csv.open()))
    clicked = next(r for r in rows if r["clicked"] == "1")
    skipped = next(r for r in rows if r["clicked"] == "0")
    started = time.perf_counter()
    answer = api_call(
        "POST",
        f"/v1/models/{model_name}:predict",
        key,
        {"instances": [clicked["item_sequence"], skipped["item_sequence"]]},
        host=SERVING,
    )
    cold = time.perf_counter() - started
    started = time.perf_counter()
    api_call("POST", f"/v1/models/{model_name}:predict", key, {"instances": [clicked["item_sequence"]]}, host=SERVING)
    warm = time.perf_counter() - started
    print(
        f"9. POST http://{SERVING}/v1/models/{model_name}:predict (TF Serving REST), first call {cold:.2f} s "
        f"(load from S3, sha256 checked), next {warm * 1000:.1f} ms:"
    )
    for row, prediction in zip((clicked, skipped), answer["predictions"], strict=True):
        shown = " ".join(row["item_sequence"].split()[-6:])
        print(
            f"   ...{shown} (clicked={row['clicked']}) -> P(click) {prediction['probability']:.3f}, "
            f"label {prediction['label']}"
        )


def cmd_s3(args) -> int:
    env = base_env()
    pid_file = var_dir(env) / "s3" / "weed.pid"
    if args.action == "start":
        ensure_s3(env)
        return 0
    if pid_file.exists():
        stop_pid(int(pid_file.read_text()))
        pid_file.unlink()
        print("S3: stopped")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up").set_defaults(func=cmd_up)
    sub.add_parser("demo").set_defaults(func=cmd_demo)
    s3 = sub.add_parser("s3")
    s3.add_argument("action", choices=["start", "stop"])
    s3.set_defaults(func=cmd_s3)
    args = parser.parse_args()
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
