"""Reads for webhooks: an endpoint's delivery log."""

from __future__ import annotations

from django.db.models import QuerySet

from events.models import WebhookDelivery, WebhookEndpoint


def deliveries_of(*, endpoint: WebhookEndpoint) -> QuerySet[WebhookDelivery]:
    """Newest first, with the event (for its id and type) in the same query."""
    return (
        WebhookDelivery.objects.for_tenant(endpoint.tenant_id)
        .filter(endpoint=endpoint)
        .select_related("event")
        .order_by("-created_at")
    )
