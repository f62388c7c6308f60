"""The serving process's access log: one line per request on the ``serving.access`` logger (``SERVING_ACCESS_LOG``).

Each line names the method, the route's template (``/v1/models/{model}:predict``, never a raw path), the model
and version answered, the status, the time taken, the bytes received (declared) and sent, the tenant and the
request id. It goes through ``logging`` like every other line, so it is JSON with ``LOG_FORMAT=json``, and
carries no header: a key never reaches it.

The request id is the caller's ``X-Request-ID`` when it is a safe token, else a new one; it is echoed in the
answer's ``X-Request-ID`` and is in every line logged while the request runs (each ASGI request runs in its own
task, so the context variable is this request's alone).

The line is written on the event loop right after the answer has been sent: at concurrency 1 the next request
waits for it. Measured with ``bench/_loadgen.py`` at c=1 on a compiled model (2 shared cores): p50 0.29 ms
without the access log, 0.32-0.38 ms with JSON lines. Handing the lines to a writer thread measured worse
(0.44-0.47 ms: the thread's wake-ups and the interpreter lock cost more than the formatting they move), so the
formatter itself is kept cheap instead (``core.logs``: one scan for credentials, no substitution unless found).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from core.logs import tenant_id_var
from core.middleware import SAFE_REQUEST_ID_PATTERN, request_id_var
from serving.runtime.http import header

logger = logging.getLogger("serving.access")
VERSION = "mlplatform.version"  # set in the ASGI scope once a prediction's version is chosen
_SAFE_REQUEST_ID = re.compile(SAFE_REQUEST_ID_PATTERN.encode())  # the header arrives as bytes here
_SCOPE = r"(?:/versions/[^/:]+|/labels/[^/:]+)?"  # a version or label after the model's name
_ROUTES = tuple(
    (re.compile(pattern), template)
    for pattern, template in (
        (rf"^/v1/models/(?P<model>[^/:]+){_SCOPE}:predict$", "/v1/models/{model}:predict"),
        (rf"^/v1/models/(?P<model>[^/:]+){_SCOPE}:explain$", "/v1/models/{model}:explain"),
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
        """Write the line, after the answer was sent (about 20 microseconds with JSON; see the module's note)."""
        if not logger.isEnabledFor(logging.INFO):
            return
        scope = self.scope
        route, model = route_of(scope["path"])
        version = scope.get(VERSION)
        declared = header(scope, b"content-length")
        milliseconds = round(seconds * 1000, 2)
        tenant_id = tenant_id_var.get()
        logger.info(
            "%s %s %s %s %.2fms out=%dB tenant=%s",
            scope["method"],
            route,
            f"{model}/{version}" if model and version is not None else (model or "-"),
            status,
            milliseconds,
            self.bytes_sent,
            tenant_id or "-",
            extra={
                "method": scope["method"],
                "route": route,
                "model": model,
                "version": version,
                "status": status,
                "duration_ms": milliseconds,
                "bytes_in": int(declared) if declared and declared.isdigit() else None,
                "bytes_out": self.bytes_sent,
                "client": (scope.get("client") or ("-",))[0],
            },
        )
