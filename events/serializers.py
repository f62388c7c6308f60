"""API shapes of webhooks: input serializers refuse unknown fields; the secret appears only on create and rotate."""

from __future__ import annotations

from rest_framework import serializers

from core.serializers import StrictInputSerializer
from events.models import EVENT_TYPES, WebhookDelivery, WebhookEndpoint

EVENT_TYPE_CHOICES = sorted(EVENT_TYPES)
# Plain strings in the schema (the service refuses unknown ones with 400 invalid_event_types, naming the known
# ones): a new event type then changes no generated client type.
EVENT_TYPES_HELP = "Event types to receive: " + ", ".join(EVENT_TYPE_CHOICES) + "."


def _event_types(**options) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.CharField(max_length=40),
        min_length=1,
        max_length=len(EVENT_TYPE_CHOICES),
        help_text=EVENT_TYPES_HELP,
        **options,
    )


class WebhookSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "description",
            "event_types",
            "is_active",
            "disabled_reason",
            "disabled_at",
            "failing_since",
            "consecutive_failures",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    event_types = serializers.ListField(child=serializers.CharField(), help_text=EVENT_TYPES_HELP)


class WebhookWithSecretSerializer(WebhookSerializer):
    """The endpoint and its signing secret: only in the answer to create and rotate-secret."""

    secret = serializers.CharField()

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookCreateSerializer(StrictInputSerializer):
    url = serializers.CharField(max_length=2048)
    event_types = _event_types()
    description = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    is_active = serializers.BooleanField(required=False, default=True)


class WebhookUpdateSerializer(StrictInputSerializer):
    url = serializers.CharField(max_length=2048, required=False)
    event_types = _event_types(required=False)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    is_active = serializers.BooleanField(required=False)


class WebhookDeliverySerializer(serializers.ModelSerializer):
    event_id = serializers.CharField(source="event.id")
    event_type = serializers.CharField(source="event.type")
    webhook = serializers.UUIDField(source="endpoint_id")

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "webhook",
            "event_id",
            "event_type",
            "status",
            "attempts",
            "last_status_code",
            "last_error",
            "last_attempt_at",
            "next_attempt_at",
            "delivered_at",
            "created_at",
        ]
        read_only_fields = fields
