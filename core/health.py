"""Liveness and readiness probes (no authentication, no tenant data)."""

from __future__ import annotations

from django.contrib import admin
from django.db import connection
from django.http import JsonResponse

from core import storage


def healthz(request):
    """Alive: the process answers HTTP."""
    return JsonResponse({"status": "ok"})


def readyz(request):
    """Ready: database, broker and object storage all reachable, else 503 naming which."""
    checks = {"database": _database(), "broker": _broker(), "storage": storage.reachable()}
    failing = {name: reason for name, (ok, reason) in checks.items() if not ok}
    body = {"status": "ok" if not failing else "unavailable", "checks": {n: r for n, (_, r) in checks.items()}}
    if failing:
        body["error"] = {
            "code": "not_ready",
            "message": "Not ready: " + ", ".join(sorted(failing)) + " unreachable.",
            "details": failing,
        }
        return JsonResponse(body, status=503)
    return JsonResponse(body)


def _database() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return False, f"{type(exc).__name__}: {exc}"[:200]
    return True, "ok"


def _broker() -> tuple[bool, str]:
    """A real protocol round trip through kombu, not only an open port."""
    from config.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return False, f"{type(exc).__name__}: {exc}"[:200]
    return True, "ok"


def platform_status(request):
    """The operators' status page (wrapped by ``admin.site.admin_view``: staff only)."""
    from django.shortcuts import render
    from django.utils import timezone

    from core import status

    context = {
        **admin.site.each_context(request),
        "title": "Platform status",
        "now": timezone.now(),
        "queues": status.queue_lengths(),
        "celery": status.celery_workers(),
        "serving": status.serving_processes(),
    }
    return render(request, "admin/platform_status.html", context)
