"""The serving process's access log: one line per request on the ``serving.access`` logger (``SERVING_ACCESS_LOG``).

Each line names the method, the route's template (``/v1/models/{model}:predict``, never a raw path), the model
and version answered, the status, the time taken, the bytes received (declared) and sent, the tenant and the
request id. It goes through ``logging`` like every other line, so it is JSON with ``LOG_FORMAT=json``, and
carries no header: a key never reaches it.

The request id is the caller's ``X-Request-ID`` when it is a safe token, else a new one; it is echoed in the
answer's ``X-Request-ID`` and is in every line logged while the request runs (each ASGI request runs in its own
task, so the context variable is this request's alone). The line is formatted and written by a thread of
its own after the answer has been sent (see ``_Writer``).
"""

from __future__ import annotations

import atexit
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from core.logs import tenant_id_var
from core.middleware import request_id_var
from serving.runtime.http import header

logger = logging.getLogger("serving.access")
VERSION = "mlplatform.version"  # set in the ASGI scope once a prediction's version is chosen
_SAFE_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._-]{1,64}$")
_SCOPE = r"(?:/versions/[^/:]+|/labels/[^/:]+)?"  # a version or label after the model's name
_ROUTES = tuple(
    (re.compile(pattern), template)
    for pattern, template in (
        (rf"^/v1/models/(?P<model>[^/:]+){_SCOPE}:predict$", "/v1/models/{model}:predict"),
        (rf"^/v1/models/(?P<model>[^/:]+){_SCOPE}/metadata$", "/v1/models/{model}/metadata"),
        (rf"^/v1/models/(?P<model>[^/:]+){_SCOPE}$", "/v1/models/{model}"),
        (r"^/v2/models/(?P<model>[^/]+)(?:/versions/[^/]+)?/infer$", "/v2/models/{model}/infer"),
        (r"^/v2/models/(?P<model>[^/]+)(?:/versions/[^/]+)?/ready$", "/v2/models/{model}/ready"),
        (r"^/v2/models/(?P<model>[^/]+)(?:/versions/[^/]+)?$", "/v2/models/{model}"),
    )
)
_FIXED = frozenset({"/healthz", "/metrics", "/v2", "/v2/health/live", "/v2/health/ready"})


def route_of(path: str) -> tuple[str, str | None]:
    """(template, model name) of a request path; ``other`` for a path no endpoint has."""
    if path in _FIXED:
        return path, None
    if path.startswith(("/v1/models/", "/v2/models/")):
        for pattern, template in _ROUTES:
            if match := pattern.match(path):
                return template, match.group("model")[:100]
    return "other", None


class Entry:
    """One request's access line in the making."""

    __slots__ = ("bytes_sent", "request_id", "scope")

    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope
        incoming = header(scope, b"x-request-id")
        self.request_id = incoming.decode() if incoming and _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        self.bytes_sent = 0
        request_id_var.set(self.request_id)  # this request's task only

    def wrap(self, send: Callable[[dict], Awaitable[None]]) -> Callable[[dict], Awaitable[None]]:
        request_id = self.request_id.encode()

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            elif message["type"] == "http.response.body":
                self.bytes_sent += len(message.get("body", b""))
            await send(message)

        return sending

    def log(self, *, status: int, seconds: float) -> None:
        """Hand the line to the writer thread: the event loop spends about a microsecond on it."""
        if not logger.isEnabledFor(logging.INFO):
            return
        scope = self.scope
        _writer.put(
            (
                time.time(),
                scope["method"],
                scope["path"],
                scope.get(VERSION),
                header(scope, b"content-length"),
                (scope.get("client") or ("-",))[0],
                status,
                seconds,
                self.bytes_sent,
                self.request_id,
                tenant_id_var.get(),
            )
        )


class _Writer:
    """A daemon thread that formats and writes the access lines, off the event loop.

    Formatting a JSON line and writing it costs tens of microseconds: on the loop, every request at
    concurrency 1 would wait that long (measured: p50 +0.1 ms on a 0.36 ms prediction). The loop puts a tuple
    on a queue instead; this thread builds the record (with the request's time, id and tenant) and hands it to
    the logger's handlers. Lines still queued when the process exits are written first (``atexit``).
    """

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def put(self, item: tuple) -> None:
        if self.thread is None:
            self._start()
        self.queue.put(item)

    def _start(self) -> None:
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="serving-access-log", daemon=True)
                self.thread.start()
                atexit.register(self.flush)

    def flush(self, timeout: float = 2.0) -> None:
        if self.thread is not None and self.thread.is_alive():
            self.queue.put(None)
            self.thread.join(timeout)

    def written(self, timeout: float = 5.0) -> bool:
        """Wait until every line put so far is written (tests, shutdown)."""
        if self.thread is None:
            return True
        done = threading.Event()
        self.queue.put(done)
        return done.wait(timeout)

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            if isinstance(item, threading.Event):
                item.set()
                continue
            try:
                _write(*item)
            except Exception:  # a line that cannot be written must not stop the others
                logging.getLogger(__name__).warning("could not write an access line", exc_info=True)


_writer = _Writer()


def wait_written(timeout: float = 5.0) -> bool:
    """Whether every access line handed over so far has been written within ``timeout`` seconds."""
    return _writer.written(timeout)


def _write(
    created: float,
    method: str,
    path: str,
    version: int | None,
    declared: bytes | None,
    client: str,
    status: int,
    seconds: float,
    bytes_sent: int,
    request_id: str,
    tenant_id: str | None,
) -> None:
    route, model = route_of(path)
    milliseconds = round(seconds * 1000, 2)
    request_id_var.set(request_id)  # this thread's own context: what the formatter and filter read
    tenant_id_var.set(tenant_id)
    record = logger.makeRecord(
        logger.name,
        logging.INFO,
        __file__,
        0,
        "%s %s %s %s %.2fms out=%dB tenant=%s",
        (
            method,
            route,
            f"{model}/{version}" if model and version is not None else (model or "-"),
            status,
            milliseconds,
            bytes_sent,
            tenant_id or "-",
        ),
        None,
        extra={
            "method": method,
            "route": route,
            "model": model,
            "version": version,
            "status": status,
            "duration_ms": milliseconds,
            "bytes_in": int(declared) if declared and declared.isdigit() else None,
            "bytes_out": bytes_sent,
            "client": client,
        },
    )
    record.created = created
    record.msecs = (created - int(created)) * 1000
    logger.handle(record)
