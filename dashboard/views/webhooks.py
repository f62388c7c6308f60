"""Webhooks: endpoints (the secret shown once, on creation and rotation), a ping, and the delivery log."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.shortcuts import redirect

from core.errors import ServiceError
from dashboard.access import TenantPage
from dashboard.forms import WebhookForm, form_error, row_id
from events import services
from events.models import EVENT_TYPES, WebhookDelivery, WebhookEndpoint
from tenants.models import Role

DELIVERIES_SHOWN = 50


def _row(raw: str | None):
    found = row_id(raw)
    if found is None:
        raise ServiceError("No such row.", code="not_found", status_code=404)
    return found


class WebhooksPage(TenantPage):
    """Owners and admins only (an endpoint's URL may carry the receiver's own token)."""

    template_name = "dashboard/webhooks.html"
    section = "webhooks"
    read_role = Role.ADMIN
    write_role = Role.ADMIN

    def get_context_data(self, form: WebhookForm | None = None, created=None, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        tenant = self.caller.tenant
        endpoints = list(WebhookEndpoint.objects.for_tenant(tenant))
        chosen = row_id(self.request.GET.get("webhook"))
        selected = next((e for e in endpoints if e.pk == chosen), None)
        deliveries = WebhookDelivery.objects.for_tenant(tenant).select_related("event", "endpoint")
        if selected is not None:
            deliveries = deliveries.filter(endpoint=selected)
        context.update(
            endpoints=endpoints,
            selected=selected,
            deliveries=deliveries.order_by("-created_at")[:DELIVERIES_SHOWN],
            form=form or WebhookForm(),
            created=created,
            event_types=EVENT_TYPES,
        )
        return context

    def act(self, request, **kwargs):
        tenant, action = self.caller.tenant, request.POST.get("action")
        if action == "create":
            form = WebhookForm(request.POST)
            if not form.is_valid():
                messages.error(request, form_error(form))
                return self.render_to_response(self.get_context_data(form=form), status=400)
            return self._show_secret(services.create_endpoint(tenant=tenant, **form.cleaned_data), status=201)
        if action == "rotate":
            return self._show_secret(
                services.rotate_secret(tenant=tenant, endpoint_id=_row(request.POST.get("webhook")))
            )
        if action == "ping":
            services.ping(tenant=tenant, endpoint_id=_row(request.POST.get("webhook")))
            messages.success(request, "Ping sent; its delivery is below.")
        elif action in {"enable", "disable"}:
            services.update_endpoint(
                tenant=tenant, endpoint_id=_row(request.POST.get("webhook")), is_active=action == "enable"
            )
            messages.success(request, f"Webhook {action}d.")
        elif action == "delete":
            services.delete_endpoint(tenant=tenant, endpoint_id=_row(request.POST.get("webhook")))
            messages.success(request, "Webhook deleted.")
        elif action == "redeliver":
            services.redeliver(tenant=tenant, delivery_id=_row(request.POST.get("delivery")))
            messages.success(request, "The event is on its way again.")
        else:
            raise ServiceError("Unknown action.", code="unknown_action")
        return redirect("dashboard:webhooks")

    def _show_secret(self, created: services.CreatedEndpoint, status: int = 200):
        # Rendered, not redirected: the secret is on this one answer and nowhere else.
        response = self.render_to_response(self.get_context_data(created=created), status=status)
        response["Cache-Control"] = "no-store"
        return response
