"""The model registry: a tenant's named models and their immutable, published versions."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from tenants.models import TenantOwnedModel


class RegisteredModel(TenantOwnedModel):
    """A tenant's named model. ``traffic`` splits unpinned requests between versions (weights sum to 100)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=63)
    traffic = models.JSONField(default=dict, blank=True)  # {"1": 90, "2": 10}; empty = no split
    last_version = models.PositiveIntegerField(default=0)  # numbers are never reused, even after a delete
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="one_model_name_per_tenant")]

    def __str__(self) -> str:
        return self.name


class ModelVersion(TenantOwnedModel):
    """A published version. It is ``ready`` (visible) only once every file and the manifest are stored."""

    class Status(models.TextChoices):
        PUBLISHING = "publishing", "Publishing"
        READY = "ready", "Ready"
        ARCHIVED = "archived", "Archived"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PUBLISHING, db_index=True)
    job = models.OneToOneField("training.TrainingJob", null=True, on_delete=models.SET_NULL, related_name="+")
    dataset = models.ForeignKey("datasets.Dataset", null=True, on_delete=models.SET_NULL, related_name="+")
    template = models.CharField(max_length=50)
    object_prefix = models.CharField(max_length=512)
    manifest = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)
    request_count = models.PositiveBigIntegerField(default=0)  # counted by the serving process
    error_count = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    published_at = models.DateTimeField(null=True, blank=True)

    STORED_BYTES = ("size_bytes", models.Q())  # a version's files, from publishing until it is deleted

    class Meta:
        ordering = ["model", "-version"]
        constraints = [models.UniqueConstraint(fields=["model", "version"], name="one_row_per_model_version")]

    def __str__(self) -> str:
        return f"{self.model.name} v{self.version}"


class ModelAlias(TenantOwnedModel):
    """A movable name for one version (``production``, ``staging``, …): promotion and rollback move it."""

    # The alias a request without a version reaches when the model has no traffic split (see
    # ``serving.selectors.ModelRoutes.default_weights``).
    DEFAULT = "production"

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="aliases")
    name = models.CharField(max_length=63)
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="aliases")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["model", "name"], name="one_alias_name_per_model")]


class RegistryEvent(TenantOwnedModel):
    """The registry's own history: every alias move, traffic change, archive and delete, and who did it."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="events")
    action = models.CharField(max_length=32)
    details = models.JSONField(default=dict)
    actor = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at"]


class PredictionUsage(TenantOwnedModel):
    """Predictions and explanations metered per tenant, model, version and hour (written by the serving process)."""

    model_name = models.CharField(max_length=63)
    version = models.PositiveIntegerField()
    period_start = models.DateTimeField()  # the hour, UTC
    requests = models.PositiveBigIntegerField(default=0)
    predictions = models.PositiveBigIntegerField(default=0)  # instances answered
    errors = models.PositiveBigIntegerField(default=0)
    explanations = models.PositiveBigIntegerField(default=0)  # instances explained (:explain), apart from predictions

    class Meta:
        ordering = ["-period_start", "model_name", "version"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "model_name", "version", "period_start"], name="one_usage_row_per_version_hour"
            )
        ]


class ServingProcess(models.Model):
    """A running serving process's report (every few seconds): what it has loaded, for the operators' status page."""

    name = models.CharField(max_length=200, unique=True)  # host:pid
    started_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(default=timezone.now, db_index=True)
    cache_used_bytes = models.PositiveBigIntegerField(default=0)
    cache_budget_bytes = models.PositiveBigIntegerField(default=0)
    loaded = models.JSONField(default=list, blank=True)  # [{"model": "slug/name/version", "memory_bytes": …}]

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
