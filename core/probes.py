"""Probes: readiness checks of the database, broker and S3, and a round trip through a worker.

The readiness checks return the failure's text (exception class and message,
which name internal hosts and ports): ``core.health`` logs it and shows it
only to operators, never to an anonymous caller of ``/readyz``.

The worker round trip is used by ``make demo``, by the operators'
``probe_worker`` command and by the tests that prove workers run with the
standard library's ``platform`` module and without TensorFlow in a process
that forks.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import time

from core import queue as queue_module
from core import storage

PROBE_PREFIX = "system/probes"


def readiness() -> dict[str, tuple[bool, str]]:
    """Each component's (reachable, reason): reason is "ok" or the failure's text, for logs and operators only."""
    return {"database": database_check(), "broker": broker_check(), "storage": storage.reachable()}


def database_check() -> tuple[bool, str]:
    from django.db import connection

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return False, f"{type(exc).__name__}: {exc}"[:500]
    return True, "ok"


def broker_check() -> tuple[bool, str]:
    """A real protocol round trip through kombu, not only an open port."""
    from config.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return False, f"{type(exc).__name__}: {exc}"[:500]
    return True, "ok"


def probe_key(probe_id: str) -> str:
    if not probe_id.isalnum():
        raise storage.UnsafeKeyError(f"probe ids are alphanumeric: {probe_id!r}")
    return f"{PROBE_PREFIX}/{probe_id}.json"


def runtime_report(*, hostname: str) -> dict:
    """What a process knows about itself; written by the worker task."""
    return {
        "hostname": hostname,
        "pid": os.getpid(),
        "platform_system": platform.system(),
        "platform_module": getattr(platform, "__file__", ""),
        "python": sys.version.split()[0],
        "tensorflow_loaded": "tensorflow" in sys.modules,
        "host": socket.gethostname(),
    }


def record_probe(*, probe_id: str, hostname: str) -> None:
    storage.put_bytes(probe_key(probe_id), json.dumps(runtime_report(hostname=hostname)).encode())


def send_probe(*, probe_id: str, queue: str = "default") -> None:
    queue_module.send("core.tasks.probe_runtime", to_queue=queue, probe_id=probe_id)


def wait_for_probe(*, probe_id: str, timeout: float) -> dict:
    """The worker's report, polled from S3; TimeoutError if none arrives."""
    key = probe_key(probe_id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if storage.head(key) is not None:
            report = json.loads(storage.get_bytes(key))
            storage.client().delete_object(Bucket=storage.bucket(), Key=key)
            return report
        time.sleep(0.25)
    raise TimeoutError(f"no worker answered probe {probe_id} within {timeout}s")
