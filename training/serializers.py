"""Serializers of training jobs: a strict input (unknown fields are 400) and the documented output."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.serializers import JsonObjectField, StrictInputSerializer
from training.models import TrainingJob

PRIVACY_REQUEST_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "description": (
        "Differentially private training (DP-SGD, Poisson sampling). Give target_epsilon (noise_multiplier is then "
        "calibrated) or noise_multiplier, or both. The plan is fixed before the job is created and shown as the "
        "job's privacy."
    ),
    "properties": {
        "target_epsilon": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 100},
        "noise_multiplier": {"type": "number", "minimum": 0.3, "maximum": 100},
        "delta": {"type": "number", "description": "default: 1/(10 N) rounded down to one figure, at most 1e-5"},
        "clip_norm": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 100, "default": 1.0},
        "accountant": {"type": "string", "enum": ["pld", "rdp"], "default": "pld"},
        "reference": {"type": "boolean", "default": False},
        "accept_low_utility": {"type": "boolean", "default": False},
    },
}
PRIVACY_PLAN_SCHEMA = {
    "type": "object",
    "additionalProperties": True,
    "description": "The job's DP plan (training.privacy.plan); {} when the job is not private.",
}


@extend_schema_field(PRIVACY_REQUEST_SCHEMA)
class PrivacyRequestField(JsonObjectField):
    """The ``privacy`` object of a job request; ``training.privacy`` checks its fields (400 invalid_privacy)."""


@extend_schema_field(PRIVACY_PLAN_SCHEMA)
class PrivacyPlanField(serializers.JSONField):
    pass


class TrainingJobSerializer(serializers.ModelSerializer):
    dataset = serializers.UUIDField(source="dataset_id", read_only=True)
    privacy = PrivacyPlanField(read_only=True)

    class Meta:
        model = TrainingJob
        fields = [
            "id",
            "status",
            "dataset",
            "template",
            "model_name",
            "model_version",
            "params",
            "privacy",
            "label_column",
            "feature_columns",
            "validation_split",
            "seed",
            "attempts",
            "progress",
            "metrics",
            "error_code",
            "error_message",
            "device",
            "compute_seconds",
            "max_runtime_seconds",
            "estimated_memory_bytes",
            "timings",
            "created_at",
            "dispatched_at",
            "started_at",
            "cancel_requested_at",
            "finished_at",
        ]


class TrainingJobCreateSerializer(StrictInputSerializer):
    dataset = serializers.UUIDField()
    template = serializers.CharField(max_length=50)
    model_name = serializers.CharField(max_length=63)
    label_column = serializers.CharField(max_length=200)
    params = JsonObjectField(required=False, default=dict)
    feature_columns = serializers.ListField(
        child=serializers.CharField(max_length=200), required=False, default=list, max_length=500
    )
    validation_split = serializers.FloatField(required=False, default=0.2)
    seed = serializers.IntegerField(required=False, default=0, min_value=0, max_value=2**31 - 1)
    max_runtime_seconds = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=settings.TRAINING_TIME_LIMIT_SECONDS,
        help_text=(
            "Runtime budget, reserved against the month's compute quota while the job waits or runs; the job stops "
            "(its checkpoint kept) once it has used it. Default: TRAINING_DEFAULT_MAX_RUNTIME_SECONDS, at most "
            "what is left of the quota."
        ),
    )
    privacy = PrivacyRequestField(required=False)


class PrivacyBudgetInputSerializer(StrictInputSerializer):
    epsilon = serializers.FloatField(allow_null=True, help_text="the budget's epsilon, or null to clear it")
    delta = serializers.FloatField(allow_null=True, help_text="the delta the budget is held at (below 1/rows)")
