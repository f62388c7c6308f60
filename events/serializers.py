"""API shapes of webhooks: input serializers refuse unknown fields; the secret appears only on create and rotate."""

from __future__ import annotations

from rest_framework import serializers

from core.serializers import StrictInputSerializer
from events.models import EVENT_TYPES, WebhookDelivery, WebhookEndpoint

EVENT_TYPE_CHOICES = sorted(EVENT_TYPES)


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

    event_types = serializers.ListField(child=serializers.ChoiceField(choices=EVENT_TYPE_CHOICES))


class WebhookWithSecretSerializer(WebhookSerializer):
    """The endpoint and its signing secret: only in the answer to create and rotate-secret."""

    secret = serializers.CharField()

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookCreateSerializer(StrictInputSerializer):
    url = serializers.CharField(max_length=2048)
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=EVENT_TYPE_CHOICES), min_length=1, max_length=len(EVENT_TYPE_CHOICES)
    )
    description = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    is_active = serializers.BooleanField(required=False, default=True)


class WebhookUpdateSerializer(StrictInputSerializer):
    url = serializers.CharField(max_length=2048, required=False)
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=EVENT_TYPE_CHOICES),
        min_length=1,
        max_length=len(EVENT_TYPE_CHOICES),
        required=False,
    )
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
