import json

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.serializers import StrictInputSerializer
from training.models import Dataset, DatasetFormat, DatasetUpload, PiiMode


class DatasetSerializer(serializers.ModelSerializer):
    class Meta:
        model = Dataset
        fields = [
            "id",
            "name",
            "version",
            "format",
            "status",
            "size_bytes",
            "sha256",
            "original_filename",
            "label_column",
            "column_tags",
            "pii_mode",
            "row_count",
            "schema",
            "stats",
            "errors",
            "duplicate_of",
            "created_at",
            "validated_at",
        ]


class DatasetListSerializer(DatasetSerializer):
    class Meta(DatasetSerializer.Meta):
        fields = [f for f in DatasetSerializer.Meta.fields if f != "stats"]


@extend_schema_field({"type": "object", "additionalProperties": True})
class JsonObjectField(serializers.Field):
    """An object given either as JSON (in a JSON body) or as a JSON string (in a multipart form)."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            try:
                data = json.loads(data) if data.strip() else {}
            except (json.JSONDecodeError, RecursionError):
                raise serializers.ValidationError("Must be a JSON object.") from None
        if not isinstance(data, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        return data

    def to_representation(self, value):
        return value


@extend_schema_field({"type": "object", "additionalProperties": {"type": "string", "enum": ["pii"]}})
class ColumnTagsField(JsonObjectField):
    """``{"column": "pii"}``, as JSON or as a JSON string in a form."""


class DatasetCreateSerializer(StrictInputSerializer):
    file = serializers.FileField(allow_empty_file=True)
    name = serializers.CharField(max_length=100, allow_blank=True)
    format = serializers.ChoiceField(choices=DatasetFormat.choices, required=False, allow_blank=True)
    label_column = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    column_tags = ColumnTagsField(required=False, default=dict)
    pii_mode = serializers.ChoiceField(choices=PiiMode.choices, required=False, default=PiiMode.HASH)


class UploadCreateSerializer(StrictInputSerializer):
    name = serializers.CharField(max_length=100)
    size = serializers.IntegerField(min_value=1, help_text="Exact size of the file in bytes.")
    filename = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    format = serializers.ChoiceField(choices=DatasetFormat.choices, required=False, allow_blank=True)
    label_column = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    column_tags = ColumnTagsField(required=False, default=dict)


class PartSerializer(StrictInputSerializer):
    part_number = serializers.IntegerField(min_value=1, max_value=10_000)
    etag = serializers.CharField(max_length=200)


class UploadCompleteSerializer(StrictInputSerializer):
    parts = PartSerializer(many=True, allow_empty=False)


class PartUrlSerializer(serializers.Serializer):
    part_number = serializers.IntegerField()
    size = serializers.IntegerField(
        help_text="Exact bytes to PUT to this URL: the length is signed, S3 refuses others."
    )
    url = serializers.URLField()


class DatasetUploadSerializer(serializers.ModelSerializer):
    dataset = DatasetListSerializer()

    class Meta:
        model = DatasetUpload
        fields = ["id", "status", "declared_size", "part_size", "created_at", "expires_at", "dataset"]


class DatasetUploadCreatedSerializer(DatasetUploadSerializer):
    parts = PartUrlSerializer(many=True)

    class Meta(DatasetUploadSerializer.Meta):
        fields = [*DatasetUploadSerializer.Meta.fields, "parts"]


class PreviewSerializer(serializers.Serializer):
    columns = serializers.ListField(child=serializers.CharField())
    rows = serializers.ListField(child=serializers.ListField())


class TrainingJobSerializer(serializers.ModelSerializer):
    dataset = serializers.UUIDField(source="dataset_id", read_only=True)

    class Meta:
        from training.models import TrainingJob

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
