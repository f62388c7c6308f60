"""Serializers of datasets and uploads: strict inputs (unknown fields are 400) and the documented outputs."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.serializers import JsonObjectField, StrictInputSerializer
from datasets.models import Dataset, DatasetFormat, DatasetUpload, PiiMode


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
            "canonical_sha256",
            "canonical_size_bytes",
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
