"""Request ids (accepted from ``X-Request-ID`` or generated, echoed back and put in every log line), and the door
through which probes reach ``/healthz`` and ``/readyz`` whatever their Host.

The request-id middleware also writes the API's access log (``api.access``, one line per request: method, route
pattern, status, time, with the request id and the tenant once authentication named it; ``API_ACCESS_LOG``).
"""

from __future__ import annotations

import contextvars
import functools
import logging
import re
import time
import uuid

from django.conf import settings
from django.core.exceptions import DisallowedHost

from core import logs

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
# An incoming X-Request-ID is kept when it looks like one (the API here, serving in serving.runtime.access).
SAFE_REQUEST_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
_SAFE_REQUEST_ID = re.compile(SAFE_REQUEST_ID_PATTERN)
access_logger = logging.getLogger("api.access")
UNMATCHED_ROUTE = "unmatched"
_NAMED_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")


def current_request_id() -> str:
    return request_id_var.get()


class RequestIdMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        token = request_id_var.set(request_id)
        tenant = logs.tenant_id_var.set(None)  # known once authenticated (logs.set_tenant); gone when it ends
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            if settings.API_ACCESS_LOG and access_logger.isEnabledFor(logging.INFO):
                _log_access(request, response.status_code, time.perf_counter() - started)
        finally:
            logs.tenant_id_var.reset(tenant)
            request_id_var.reset(token)
        response["X-Request-ID"] = request_id
        return response


def route_of(request) -> str:
    """The URL pattern that matched (``/api/v1/jobs/<pk>``: one per pattern, never a raw path with ids)."""
    match = getattr(request, "resolver_match", None)
    if match is None or not match.route:
        return UNMATCHED_ROUTE
    return _readable_route(match.route)


@functools.lru_cache(maxsize=1024)  # one entry per URL pattern
def _readable_route(route: str) -> str:
    """A router's regular expression (``^jobs/(?P<pk>[^/.]+)$``) as the ``<name>`` form paths use."""
    route = _NAMED_GROUP.sub(r"<\1>", route).replace("^", "").replace("$", "").replace("\\.", ".")
    return "/" + route


def _log_access(request, status: int, seconds: float) -> None:
    route = route_of(request)
    milliseconds = round(seconds * 1000, 2)
    access_logger.info(
        "%s %s %s %.2fms",
        request.method,
        route,
        status,
        milliseconds,
        extra={"method": request.method, "route": route, "status": status, "duration_ms": milliseconds},
    )


class RequestIdLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class ProbeMiddleware:
    """Answer ``/healthz`` and ``/readyz`` to probes whatever their ``Host`` header (first in ``MIDDLEWARE``).

    Health checks address a process by its IP or pod name (``127.0.0.1:8000`` in a container's own check, a pod
    IP from the kubelet), which is not one of ``ALLOWED_HOSTS``: Django would answer 400 ``DisallowedHost``. A
    probe with a foreign Host is answered here, before host validation and anonymously (only the operators'
    token shows ``/readyz``'s reasons). A probe with one of our hosts goes through the whole stack, so a staff
    session still sees the reasons; ``SECURE_REDIRECT_EXEMPT`` keeps either from being redirected to https.
    """

    def __init__(self, get_response):
        # Imported here, not at the top: logging's set-up imports this module for RequestIdLogFilter, and the
        # probes pull in storage (boto3) and the Celery app, which must not load that early.
        from core import health

        self.get_response = get_response
        self.probes = {"/healthz": health.healthz, "/readyz": health.readyz}

    def __call__(self, request):
        probe = self.probes.get(request.path_info)
        if probe is None or request.method not in {"GET", "HEAD"}:
            return self.get_response(request)
        try:
            request.get_host()
        except DisallowedHost:
            return probe(request)
        return self.get_response(request)
