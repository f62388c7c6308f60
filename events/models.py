"""Webhook endpoints, the events sent to them, each delivery of an event to an endpoint and its attempts.

An event is written once (``WebhookEvent``, a stable ``evt_…`` id receivers deduplicate by) and fanned out as one
``WebhookDelivery`` per subscribed endpoint; every HTTP attempt of a delivery is a ``DeliveryAttempt`` row, so
the delivery log shows what the receiver answered each time. ``QuotaAlert`` remembers which quota crossed its
threshold in which period, so ``quota.nearly_used`` is sent once per quota and period.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from tenants.models import TenantOwnedModel

# Every event type a tenant may subscribe to. ``webhook.ping`` is sent only by the ping action, to one endpoint.
EVENT_TYPES = {
    "job.finished": "A training job ended: succeeded, failed or cancelled.",
    "model.version_ready": "A model version was published and can be served.",
    "model.alias_moved": "An alias was set, rolled back or deleted.",
    "model.traffic_changed": "A model's traffic split was set or removed.",
    "quota.nearly_used": "A quota crossed its warning threshold this period.",
}
PING = "webhook.ping"


def new_event_id() -> str:
    return f"evt_{uuid.uuid4().hex}"


class WebhookEndpoint(TenantOwnedModel):
    """Where a tenant wants events: a URL, the event types it takes, and the secret bodies are signed with.

    The secret is stored sealed (AES-GCM, a key derived from ``SECRET_KEY``): it must be readable to sign, and
    the database alone must not hand it out. After a rotation the previous secret signs too until
    ``previous_secret_expires_at``, so a receiver can switch without losing events.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    url = models.CharField(max_length=2048)
    description = models.CharField(max_length=200, blank=True)
    event_types = models.JSONField(default=list)
    is_active = models.BooleanField(default=True)
    secret_sealed = models.BinaryField()
    previous_secret_sealed = models.BinaryField(null=True, blank=True)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    # Set when every attempt since then failed; an endpoint failing for WEBHOOK_DISABLE_AFTER_SECONDS is disabled.
    failing_since = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    disabled_reason = models.CharField(max_length=200, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.url


class WebhookEvent(TenantOwnedModel):
    """One thing that happened, as every endpoint receives it (the body is built from these fields)."""

    id = models.CharField(primary_key=True, max_length=40, default=new_event_id, editable=False)
    type = models.CharField(max_length=40, db_index=True)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.type} {self.id}"


class WebhookDelivery(TenantOwnedModel):
    """One event on its way to one endpoint: retried with backoff until a 2xx, a 410 or the last attempt."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # An attempt in progress holds the delivery until then (a second message for it waits or does nothing).
    locked_until = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.event_id} -> {self.endpoint_id} ({self.status})"


class DeliveryAttempt(TenantOwnedModel):
    """One HTTP request of a delivery and what came back (a status code, or why there was none)."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    duration_ms = models.PositiveIntegerField(default=0)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.delivery_id}: {self.status_code or self.error}"


class QuotaAlert(TenantOwnedModel):
    """``quota.nearly_used`` was sent for this quota in this period (a month, ``YYYY-MM``): never twice."""

    quota = models.CharField(max_length=64)
    period = models.CharField(max_length=16)
    used = models.FloatField()
    limit = models.FloatField()
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["tenant", "quota", "period"], name="one_quota_alert_per_period")]

    def __str__(self) -> str:
        return f"{self.quota} {self.period}"
