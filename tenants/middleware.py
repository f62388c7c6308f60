"""Operators in the admin console act as ``operator:<email>`` in the audit log."""

from __future__ import annotations

from tenants import audit


class AdminAuditActorMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if not (request.path.startswith("/admin/") and user is not None and user.is_authenticated and user.is_staff):
            return self.get_response(request)
        with audit.acting_as(audit.Actor.for_operator(user)):
            return self.get_response(request)
