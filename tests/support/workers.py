"""Real Celery worker processes for tests, started and stopped by process id."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

from django.db import connection

from core import probes

ROOT = Path(__file__).resolve().parents[2]  # the repository: this file is tests/support/<name>.py
CELERY = str(Path(sys.executable).with_name("celery"))


def database_url_for_subprocesses() -> str:
    """The URL of the database this test process uses (the test database once set up)."""
    settings = connection.settings_dict
    if settings["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings['NAME']}"
    user = settings.get("USER") or ""
    password = f":{settings['PASSWORD']}" if settings.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{settings.get('HOST') or '127.0.0.1'}:{settings.get('PORT') or 5432}/{settings['NAME']}"


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
    env["DATABASE_URL"] = database_url_for_subprocesses()
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group a test started (by its id), SIGKILL after 30 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def celery_worker(
    queues: str = "default,cpu,gpu", *, pool: str = "prefork", ready_timeout: float = 60, **extra_env: str
):
    """A worker process consuming ``queues``; yields once it has answered a probe.

    ``extra_env`` adds to its environment; its log file is ``celery_worker.last_log`` while it runs.
    """
    name = f"test-{uuid.uuid4().hex[:8]}@%h"
    log_path = ROOT / "var" / "test" / f"worker-{name.split('@')[0]}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    celery_worker.last_log = log_path
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                CELERY,
                "-A",
                "config",
                "worker",
                "-Q",
                queues,
                "-c",
                "1",
                "-P",
                pool,
                "-n",
                name,
                "--without-gossip",
                "--without-mingle",
                "--loglevel=INFO",
            ],
            cwd=ROOT,
            env=subprocess_env(**extra_env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        probe_id = uuid.uuid4().hex
        probes.send_probe(probe_id=probe_id, queue=queues.split(",")[0])
        try:
            first_report = probes.wait_for_probe(probe_id=probe_id, timeout=ready_timeout)
        except TimeoutError:
            raise AssertionError(f"worker did not start; log:\n{log_path.read_text()[-4000:]}") from None
        yield process, first_report
    finally:
        stop_process_group(process)


@contextmanager
def serving_process(*, ready_timeout: float = 90, port: int | None = None, workers: int = 1, **extra_env: str):
    """``manage.py serve_models`` on ``port`` (a free one by default), as deployed; yields its base URL.

    The process is reachable as ``serving_process.last`` while it runs, so a test can kill it by id.
    """
    port = port or free_port()
    log_path = ROOT / "var" / "test" / f"serving-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "manage.py"),
                "serve_models",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            cwd=ROOT,
            env=subprocess_env(
                **({"SERVING_CACHE_DIR": str(ROOT / "var" / "test" / f"model-cache-{port}")} | extra_env)
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    serving_process.last = process
    try:
        wait_until_answers(base + "/v2/health/ready", process, log_path, ready_timeout, "serving")
        yield base
    finally:
        stop_process_group(process)


@contextmanager
def gunicorn_server(*, workers: int = 1, threads: int = 4, ready_timeout: float = 60, **extra_env: str):
    """The API under gunicorn with the deployment's config on a free port; yields (base URL, log path)."""
    port = free_port()
    log_path = ROOT / "var" / "test" / f"gunicorn-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = subprocess_env(
        GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS=str(workers), GUNICORN_THREADS=str(threads), **extra_env
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # gunicorn.conf.py makes (and empties) its own
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "platform/gunicorn.conf.py", "config.wsgi"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(base + "/healthz", process, log_path, ready_timeout, "gunicorn")
        yield base, log_path
    finally:
        stop_process_group(process)


def wait_until_answers(url: str, process: subprocess.Popen, log_path: Path, timeout: float, what: str) -> None:
    """Poll ``url`` until it answers; fail with the process's log if it exits or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{what} did not start; log:\n{log_path.read_text()[-4000:]}") from None
            time.sleep(0.2)
