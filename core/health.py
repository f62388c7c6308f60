"""Liveness and readiness probes (no authentication, no tenant data).

``/readyz`` tells an anonymous caller (a load balancer, anyone on the
internet) only which component is down, as plain codes: the failure's text
names internal hosts, ports and library errors, so it goes to the log, to a
staff session, to a caller presenting the operators' metrics token
(``Authorization: Bearer <METRICS_TOKEN>`` or ``<SERVING_METRICS_TOKEN>``), and to the admin's
status page.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.http import HttpRequest, JsonResponse

from core import probes
from core.bearer import bearer_matches

logger = logging.getLogger(__name__)


def healthz(request):
    """Alive: the process answers HTTP."""
    return JsonResponse({"status": "ok"})


def readyz(request):
    """Ready: database, broker and object storage all reachable, else 503 naming which (details for operators)."""
    checks = probes.readiness()
    failing = sorted(name for name, (ok, _) in checks.items() if not ok)
    for name in failing:
        logger.warning("readiness: %s unreachable: %s", name, checks[name][1])
    body = {
        "status": "ok" if not failing else "unavailable",
        "checks": {n: "ok" if ok else "fail" for n, (ok, _) in checks.items()},
    }
    if _is_operator(request):
        body["reasons"] = {name: reason for name, (_, reason) in checks.items()}
    if failing:
        body["error"] = {
            "code": "not_ready",
            "message": "Not ready: " + ", ".join(failing) + " unreachable.",
            "details": {name: "unreachable" for name in failing},
        }
        return JsonResponse(body, status=503)
    return JsonResponse(body)


def _is_operator(request: HttpRequest) -> bool:
    """A staff session, or the operators' metrics token (compared in constant time)."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    presented = request.headers.get("Authorization", "")
    return any(bearer_matches(presented, token) for token in (settings.SERVING_METRICS_TOKEN, settings.METRICS_TOKEN))
