"""Datasets: immutable, versioned, tenant-owned files in object storage.

The tables keep the names they had when datasets lived in the ``training`` app (``db_table``), so moving the app
moved no data.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from tenants.models import TenantOwnedModel


class DatasetFormat(models.TextChoices):
    CSV = "csv", "CSV"
    PARQUET = "parquet", "Parquet"
    JSONL = "jsonl", "JSON lines"


class PiiMode(models.TextChoices):
    HASH = "hash", "Replace with a keyed hash"
    DROP = "drop", "Drop the column"


class Dataset(TenantOwnedModel):
    """One immutable version of a named dataset.

    ``version`` counts 1, 2, 3, … per tenant and name. The object at
    ``object_key`` is written once (after PII columns were hashed or dropped)
    and never changed; ``sha256`` and ``size_bytes`` describe that object.
    """

    class Status(models.TextChoices):
        UPLOADING = "uploading", "Uploading"
        VALIDATING = "validating", "Validating"
        READY = "ready", "Ready"
        INVALID = "invalid", "Invalid"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    version = models.PositiveIntegerField()
    format = models.CharField(max_length=16, choices=DatasetFormat.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.VALIDATING, db_index=True)
    object_key = models.CharField(max_length=512, blank=True)
    original_filename = models.CharField(max_length=255, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    label_column = models.CharField(max_length=200, blank=True)
    column_tags = models.JSONField(default=dict, blank=True)
    pii_mode = models.CharField(max_length=8, choices=PiiMode.choices, default=PiiMode.HASH)
    # The canonical training copy (datasets.canonical): Parquet written by validation, read by everything downstream.
    canonical_key = models.CharField(max_length=512, blank=True)
    canonical_sha256 = models.CharField(max_length=64, blank=True)
    canonical_size_bytes = models.PositiveBigIntegerField(default=0)
    schema = models.JSONField(default=list, blank=True)
    stats = models.JSONField(default=dict, blank=True)
    row_count = models.PositiveBigIntegerField(null=True, blank=True)
    errors = models.JSONField(default=list, blank=True)
    # The differential-privacy budget of the rows (training.privacy): every job on the dataset must then be private,
    # and their composed epsilon at this delta stays within this epsilon. Null: no budget.
    privacy_budget_epsilon = models.FloatField(null=True, blank=True)
    privacy_budget_delta = models.FloatField(null=True, blank=True)
    duplicate_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    validated_at = models.DateTimeField(null=True, blank=True)

    # Invalid datasets have their objects removed; the others' bytes are stored or on their way.
    STORED_BYTES = ("size_bytes", models.Q(status__in=[Status.UPLOADING, Status.VALIDATING, Status.READY]))

    class Meta:
        db_table = "training_dataset"
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name", "version"], name="one_dataset_version_per_name"),
        ]
        indexes = [models.Index(fields=["tenant", "name", "-version"])]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class DatasetUpload(TenantOwnedModel):
    """A direct-to-S3 multipart upload in progress; completing it makes a Dataset."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        COMPLETED = "completed", "Completed"
        ABORTED = "aborted", "Aborted"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    dataset = models.OneToOneField(Dataset, on_delete=models.CASCADE, related_name="upload")
    s3_upload_id = models.CharField(max_length=1024)
    declared_size = models.PositiveBigIntegerField()
    part_size = models.PositiveBigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()

    class Meta:
        db_table = "training_datasetupload"
        ordering = ["-created_at"]
