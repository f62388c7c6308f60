"""Serializers of training jobs: a strict input (unknown fields are 400) and the documented output."""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from core.serializers import JsonObjectField, StrictInputSerializer
from training.models import TrainingJob


class TrainingJobSerializer(serializers.ModelSerializer):
    dataset = serializers.UUIDField(source="dataset_id", read_only=True)

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
