"""Operators see webhook endpoints (never their secrets), events and the delivery log, read-only: tenants change
their endpoints through the API and the dashboard, audited."""

from __future__ import annotations

from django.contrib import admin

from core.admin import RecordAdmin
from events.models import DeliveryAttempt, QuotaAlert, WebhookDelivery, WebhookEndpoint, WebhookEvent


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(RecordAdmin):
    list_display = ["url", "tenant", "is_active", "disabled_reason", "consecutive_failures", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["url", "tenant__slug"]
    exclude = ["secret_sealed", "previous_secret_sealed"]

    def get_readonly_fields(self, request, obj=None):
        return [f for f in super().get_readonly_fields(request, obj) if f not in self.exclude]


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = ["number", "started_at", "duration_ms", "status_code", "error"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(RecordAdmin):
    list_display = ["event", "endpoint", "tenant", "status", "attempts", "last_status_code", "next_attempt_at"]
    list_filter = ["status"]
    search_fields = ["event__id", "tenant__slug"]
    inlines = [DeliveryAttemptInline]


@admin.register(WebhookEvent)
class WebhookEventAdmin(RecordAdmin):
    list_display = ["id", "type", "tenant", "created_at"]
    list_filter = ["type"]
    search_fields = ["id", "tenant__slug"]


@admin.register(QuotaAlert)
class QuotaAlertAdmin(RecordAdmin):
    list_display = ["tenant", "quota", "period", "used", "limit", "created_at"]
