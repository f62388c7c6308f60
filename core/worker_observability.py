"""What a Celery worker (and beat) logs and measures, wired to Celery's signals by ``config.celery``.

Logs: Celery is told not to configure logging (``setup_logging``): the process uses ``settings.LOGGING`` like
every other, so ``LOG_FORMAT=json`` holds for workers and beat too. Around each task the ``job_id`` or
``dataset_id`` argument it was sent with (and the task's name and id) become the log context (``core.logs``).

Metrics, when ``WORKER_METRICS_PORT`` is set: the worker's main process serves ``GET /metrics`` on that port
(``Authorization: Bearer <METRICS_TOKEN>``) with

- ``celery_task_seconds{task, state}``: how long each task ran, by its final state (success, failure, retry);
- ``celery_task_failures_total{task}`` and ``celery_task_retries_total{task}``.

Tasks run in the pool's child processes, so these use prometheus_client's multiprocess mode: the main process
empties a directory of its own (``PLATFORM_VAR_DIR/worker-metrics/<host>-<port>``) and names it in
``PROMETHEUS_MULTIPROC_DIR`` before the pool forks; every child writes its values there and the main process's
scrape adds them up. Each worker container (docker-compose service, Kubernetes pod) is scraped on its own port.
"""

from __future__ import annotations

import contextlib
import logging
import logging.config
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from core import logs

logger = logging.getLogger(__name__)

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 6 * 3600.0)
_CONTEXT_ARGUMENTS = ("job_id", "dataset_id")
_state: dict[str, Any] = {"metrics": None, "server": None}
_started: dict[str, float] = {}  # task id -> when it started (this process)
_contexts: dict[str, contextlib.ExitStack] = {}  # task id -> its log context, closed when it ends


# --- logs -----------------------------------------------------------------------------------------------------


def configure_logging(**kwargs: Any) -> None:
    """``setup_logging`` receiver: the settings' LOGGING, so Celery adds no handler or format of its own."""
    logging.config.dictConfig(settings.LOGGING)
    logging.captureWarnings(True)  # Python warnings become log lines (JSON too), not bare stderr text


def task_started(task_id: str | None = None, task: Any = None, kwargs: dict | None = None, **_: Any) -> None:
    """``task_prerun``: the task's ids become the log context; its clock starts."""
    if task_id is None:
        return
    ids = {name: (kwargs or {}).get(name) for name in _CONTEXT_ARGUMENTS}
    stack = contextlib.ExitStack()
    tenant = logs.tenant_id_var.set(None)  # the task may name its tenant (logs.set_tenant); the next one starts anew
    stack.callback(logs.tenant_id_var.reset, tenant)
    stack.enter_context(logs.context(**{name: value for name, value in ids.items() if isinstance(value, str)}))
    _contexts[task_id] = stack
    _started[task_id] = time.perf_counter()


def task_finished(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    """``task_postrun``: its duration by final state; its log context ends."""
    started = _started.pop(task_id, None)
    metrics = _state["metrics"]
    if metrics is not None and started is not None and task is not None:
        metrics["seconds"].labels(task=task.name, state=(state or "unknown").lower()).observe(
            time.perf_counter() - started
        )
    stack = _contexts.pop(task_id, None)
    if stack is not None:
        stack.close()


def task_failed(sender: Any = None, **_: Any) -> None:
    metrics = _state["metrics"]
    if metrics is not None and sender is not None:
        metrics["failures"].labels(task=sender.name).inc()


def task_retried(sender: Any = None, **_: Any) -> None:
    metrics = _state["metrics"]
    if metrics is not None and sender is not None:
        metrics["retries"].labels(task=sender.name).inc()


# --- metrics --------------------------------------------------------------------------------------------------


def metrics_directory(port: int) -> Path:
    """This worker's own: by host name too, so workers sharing a var volume never empty each other's."""
    return Path(settings.VAR_DIR) / "worker-metrics" / f"{socket.gethostname()}-{port}"


def prepare_metrics(**_: Any) -> None:
    """``worker_init`` (main process, before the pool forks): the multiprocess directory and the metrics."""
    port = settings.WORKER_METRICS_PORT
    if not port:
        return
    from core.metrics import require_token  # when a worker starts: config.celery loads this module with the settings

    try:
        require_token()  # production: no open metrics port
    except ImproperlyConfigured as exc:
        # Celery logs and ignores a receiver's exceptions; a SystemExit stops the worker, as a bad setting should.
        raise SystemExit(str(exc)) from None
    directory = metrics_directory(port)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):  # a previous run's values are not this run's
        stale.unlink(missing_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    from prometheus_client import Counter, Histogram, values

    # prometheus_client picks how values are stored when first imported (the settings' apps may have imported
    # it already): pick again now that the directory is named, before any of these metrics exists.
    values.ValueClass = values.get_value_class()
    _state["metrics"] = {
        "seconds": Histogram(
            "celery_task_seconds",
            "Seconds a task ran, by task name and final state.",
            ["task", "state"],
            buckets=DURATION_BUCKETS,
            registry=None,
        ),
        "failures": Counter("celery_task_failures", "Tasks that raised, by task name.", ["task"], registry=None),
        "retries": Counter(
            "celery_task_retries", "Tasks that asked to be retried, by task name.", ["task"], registry=None
        ),
    }


def serve_metrics(**_: Any) -> None:
    """``worker_ready``: ``GET /metrics`` on ``WORKER_METRICS_HOST:WORKER_METRICS_PORT`` from a daemon thread."""
    port = settings.WORKER_METRICS_PORT
    if not port or _state["metrics"] is None or _state["server"] is not None:
        return
    from prometheus_client.exposition import ThreadingWSGIServer

    server = make_server(
        settings.WORKER_METRICS_HOST, port, _metrics_app, ThreadingWSGIServer, handler_class=_QuietHandler
    )
    _state["server"] = server
    threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True).start()
    logger.info("worker metrics on %s:%s/metrics", settings.WORKER_METRICS_HOST, port)


def _metrics_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    from core.metrics import CONTENT_TYPE, authorized  # as above: not while the settings load

    if environ.get("PATH_INFO") != "/metrics":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"GET /metrics\n"]
    if not authorized(environ.get("HTTP_AUTHORIZATION", "")):
        start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")])
        return [b"Send the metrics token as 'Authorization: Bearer <token>'.\n"]
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    body = generate_latest(registry)
    start_response("200 OK", [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(body)))])
    return [body]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes every few seconds are not news
        return
