#!/usr/bin/env python
"""Embedded-stack launcher: the whole platform on one machine with no servers installed.

    python platform/stack.py up      # S3 + API on :8000 + serving on :8001 + worker + beat, in the foreground
    python platform/stack.py demo    # start what is missing, run the main job, stop, exit 0
    python platform/stack.py s3 start|stop

Defaults: SQLite, Celery's filesystem transport, SeaweedFS (``weed mini``)
on 127.0.0.1:8333. The repository's ``.env`` is read first (as ``manage.py``
does); any of DATABASE_URL, CELERY_BROKER_URL, S3_* in the environment take
precedence, and PLATFORM_API_PORT / PLATFORM_SERVING_PORT move the API and
serving ports. Ctrl+C (SIGINT) or SIGTERM at any moment, start-up included,
stops every process this script started, by its process id, and nothing else.
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(1, str(ROOT))  # after the stdlib-first entries: `import platform` stays the stdlib's

from config.env import load_development_env  # noqa: E402
from core.s3server import S3Server, port_is_open, start_s3_server, stop_pid  # noqa: E402

PYTHON = sys.executable
BIN = Path(PYTHON).parent
HOST = "127.0.0.1"
STOP_TIMEOUT_SECONDS = 20


def base_env() -> dict[str, str]:
    """The children's environment: ours, then ``.env``, then the embedded development defaults.

    ``.env`` is read here as well as by each ``manage.py`` child so that this script and its children agree
    on the var dir, the S3 endpoint and the ports.
    """
    env = dict(os.environ)
    load_development_env(ROOT, env)
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    env.setdefault("DEBUG", "1")
    env.setdefault("SERVING_URL", f"http://{serving_address(env)}")  # the dashboard's "try it" follows the port
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _port(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name) or str(default)
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise SystemExit(f"{name}={raw!r} is not a TCP port.")
    return int(raw)


def api_address(env: dict[str, str]) -> str:
    return f"{HOST}:{_port(env, 'PLATFORM_API_PORT', 8000)}"


def serving_address(env: dict[str, str]) -> str:
    return f"{HOST}:{_port(env, 'PLATFORM_SERVING_PORT', 8001)}"


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


class Children:
    """Every process this launcher starts, so that all of them are stopped, by process id, whenever it stops.

    A process is recorded the moment it exists (before waiting for it to answer); the local S3 server, whose
    process id ``start_s3_server`` hands back only once it answers, and anything else started but not yet
    recorded when a signal came, are found as this process's own children.
    """

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen] = []
        self.s3: S3Server | None = None

    def spawn(self, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        process = subprocess.Popen(command, env=env, cwd=ROOT)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        stop_all(self.processes, self.s3)
        for pid in own_child_pids():
            stop_pid(pid, timeout=STOP_TIMEOUT_SECONDS)


def own_child_pids() -> list[int]:
    """Process ids whose parent is this process (read from Linux's /proc; empty where there is none).

    An unreaped child keeps its id, so signalling one of these can never reach another program's process.
    """
    me, found = os.getpid(), []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()  # after "pid (command name)": state, parent id, ...
        if len(fields) > 1 and int(fields[1]) == me:
            found.append(int(entry))
    return found


def stop_on_signals() -> None:
    """From now on SIGINT (Ctrl+C) and SIGTERM end the run: ``supervised`` then stops what was started.

    The handler raises ``KeyboardInterrupt`` wherever the main thread is (waiting for SeaweedFS, running
    migrations, waiting for the API) and first ignores both signals, so a second Ctrl+C cannot cut the
    clean-up short. Children started afterwards get the default handlers back when they exec.
    """

    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


@contextmanager
def supervised() -> Iterator[Children]:
    """Yields the record of started processes; stops all of them however the block ends."""
    children = Children()
    try:
        yield children
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        children.stop()


def start_api(children: Children, env: dict[str, str]) -> subprocess.Popen:
    address = api_address(env)
    process = children.spawn([PYTHON, str(ROOT / "manage.py"), "runserver", address, "--noreload"], env)
    wait_http(f"http://{address}/healthz", process)
    return process


def start_serving(children: Children, env: dict[str, str]) -> subprocess.Popen:
    """The prediction process (TF Serving REST + KServe v2), apart from the API."""
    host, port = serving_address(env).split(":")
    process = children.spawn([PYTHON, str(ROOT / "manage.py"), "serve_models", "--host", host, "--port", port], env)
    wait_http(f"http://{host}:{port}/v2/health/ready", process)
    return process


def start_worker(children: Children, env: dict[str, str]) -> subprocess.Popen:
    return children.spawn(
        [
            str(BIN / "celery"),
            "-A",
            "config",
            "worker",
            "-Q",
            "default,cpu,gpu,webhooks",
            "-c",
            "1",
            "-n",
            f"embedded-{os.getpid()}@%h",
            "--loglevel=WARNING",
        ],
        env,
    )


def beat_schedule_file(env: dict[str, str]) -> Path:
    return var_dir(env) / "beat" / "celerybeat-schedule"


def start_beat(children: Children, env: dict[str, str]) -> subprocess.Popen:
    """Celery beat: the periodic tasks of ``CELERY_BEAT_SCHEDULE`` (dispatch, requeues, usage roll-up, clean-up).

    It only publishes to the broker, which the filesystem transport supports; its schedule file lives under
    the var dir with the rest of the embedded state.
    """
    schedule = beat_schedule_file(env)
    schedule.parent.mkdir(parents=True, exist_ok=True)
    return children.spawn(
        [str(BIN / "celery"), "-A", "config", "beat", f"--schedule={schedule}", "--loglevel=WARNING"], env
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


def api_call(method: str, path: str, key: str, body: dict | None = None, *, host: str) -> dict:
    request = urllib.request.Request(
        f"http://{host}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def upload_dataset(path: Path, key: str, *, host: str, name: str, label_column: str) -> dict:
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
        f"http://{host}/api/v1/datasets",
        method="POST",
        data=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def wait_for_dataset(dataset_id: str, key: str, *, host: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dataset = api_call("GET", f"/api/v1/datasets/{dataset_id}", key, host=host)
        if dataset["status"] not in {"validating", "uploading"}:
            return dataset
        time.sleep(0.5)
    raise SystemExit(f"dataset {dataset_id} was not validated within {timeout}s")


def wait_for_job(job_id: str, key: str, *, host: str, timeout: float = 900) -> dict:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        job = api_call("GET", f"/api/v1/jobs/{job_id}", key, host=host)
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
    """SIGTERM every recorded process (the last started first), wait for each, then stop S3 last."""
    for process in reversed(processes):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if s3 is not None:
        s3.stop(timeout=STOP_TIMEOUT_SECONDS)


def interrupted_exit_code(interrupt: KeyboardInterrupt) -> int:
    """The shell's code for death by that signal (130 for Ctrl+C, 143 for SIGTERM)."""
    name = interrupt.args[0] if interrupt.args else "SIGINT"
    return 128 + int(getattr(signal, name, signal.SIGINT))


def cmd_up(args) -> int:
    try:
        env = base_env()
        api, serving = api_address(env), serving_address(env)
        with supervised() as children:
            children.s3 = ensure_s3(env)
            prepare(env)
            tenant = create_demo_tenant(env, "Demo")
            started = {
                "API": start_api(children, env),
                "worker": start_worker(children, env),
                "beat": start_beat(children, env),
                "serving": start_serving(children, env),
            }
            logins = json.loads(manage(env, "demo_logins", "--json", capture=True).strip().splitlines()[-1])
            print()
            print(f"Dashboard:  http://{api}/   sign in as {logins['owner']} / {logins['password']}")
            print(f"Admin:      http://{api}/admin/   sign in as {logins['operator']} / {logins['password']}")
            print(f"Status:     http://{api}/admin/status/   (workers, queues, serving processes)")
            print(f"API:        http://{api}/api/v1/   (OpenAPI docs: http://{api}/api/docs/)")
            print(f"Serving:    http://{serving}/v1/models/<name>:predict  and  /v2/models/<name>/infer")
            print(f"S3:         {s3_endpoint(env)}")
            print(f"Worker:     queues default, cpu, gpu; beat runs the periodic tasks ({beat_schedule_file(env)})")
            print(f"Demo tenant {tenant['slug']}, API key: {tenant['api_key']}")
            print("Press Ctrl+C to stop.", flush=True)
            while True:
                exited = [name for name, process in started.items() if process.poll() is not None]
                if exited:
                    print(f"{', '.join(exited)} exited; stopping the rest.", file=sys.stderr)
                    return 1
                time.sleep(1)
    except KeyboardInterrupt:
        print("Stopped everything the stack started.")
        return 0
    except subprocess.CalledProcessError as failed:
        return report_failed_step(failed)


def cmd_demo(args) -> int:
    try:
        env = base_env()
        with supervised() as children:
            run_demo(children, env)
        return 0
    except KeyboardInterrupt as interrupt:
        print("demo interrupted: stopped everything it started.", file=sys.stderr)
        return interrupted_exit_code(interrupt)
    except subprocess.CalledProcessError as failed:
        return report_failed_step(failed)


def report_failed_step(failed: subprocess.CalledProcessError) -> int:
    """One line naming the step that failed (its own traceback is already above), not a second traceback."""
    step = " ".join(str(part) for part in failed.cmd[1:])
    print(f"`{step}` exited with {failed.returncode}; stopped everything the stack started.", file=sys.stderr)
    return 1


def run_demo(children: Children, env: dict[str, str]) -> None:
    """The main job end to end, printed step by step (no beat: submitting a job dispatches it)."""
    api, serving = api_address(env), serving_address(env)
    children.s3 = ensure_s3(env)
    prepare(env)
    tenant = create_demo_tenant(env, f"Demo {time.strftime('%Y%m%d-%H%M%S')}")
    key = tenant["api_key"]
    print(f"1. created tenant {tenant['slug']} ({tenant['tenant_id']})")
    print(f"   API key (shown once): {key}")
    start_api(children, env)
    start_worker(children, env)
    start_serving(children, env)
    me = api_call("GET", "/api/v1/tenant", key, host=api)
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
    created = upload_dataset(clicks, key, host=api, name="clicks", label_column="clicked")
    print(
        f"4. uploaded {clicks.name} ({created['size_bytes']} bytes) as dataset {created['name']} "
        f"v{created['version']}, status {created['status']}"
    )
    dataset = wait_for_dataset(created["id"], key, host=api)
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
        key,
        {
            "dataset": dataset["id"],
            "template": "sequence_ctr",
            "model_name": "clicks-ctr",
            "label_column": "clicked",
            "params": {"epochs": 3},
            "seed": 1,
        },
        host=api,
    )
    print(
        f"6. training job {job['id']} queued: sequence_ctr (Embedding 128 -> Conv1D 64 -> MaxPool -> "
        "LSTM 128 -> sigmoid), 3 epochs"
    )
    job = wait_for_job(job["id"], key, host=api)
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
        "(SavedModel + compiled ONNX core + manifest.json)"
    )
    served = api_call("GET", f"/api/v1/models/{job['model_name']}/versions/{job['model_version']}", key, host=api)
    runtime, parity = served["serving"]["runtime"], served["serving"]["parity"] or {}
    print(
        f"   served by {runtime} ({served['serving']['reason']}"
        + (f": {parity['rows']} rows, max difference {parity['max_abs_difference']:.1e})" if parity else ")")
    )
    predict_over_http(key, job["model_name"], job["model_version"], clicks, api=api, serving=serving)
    print("demo finished: the platform is up on the embedded defaults.")


def predict_over_http(key: str, model_name: str, version: int, sample_csv: Path, *, api: str, serving: str) -> None:
    """Promote the new version to production, then ask the serving process about two real visitors."""
    api_call("PUT", f"/api/v1/models/{model_name}/aliases/production", key, {"version": version}, host=api)
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
        host=serving,
    )
    cold = time.perf_counter() - started
    started = time.perf_counter()
    api_call("POST", f"/v1/models/{model_name}:predict", key, {"instances": [clicked["item_sequence"]]}, host=serving)
    warm = time.perf_counter() - started
    print(
        f"9. POST http://{serving}/v1/models/{model_name}:predict (TF Serving REST), first call {cold:.2f} s "
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
    if args.func in {cmd_up, cmd_demo}:
        stop_on_signals()  # before anything starts: a signal during start-up must stop what was started
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
