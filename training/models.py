"""Training jobs, their metrics, log lines and attempts."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from tenants.models import TenantOwnedModel


class TrainingJob(TenantOwnedModel):
    """One training run: a state machine driven by the dispatcher and the worker.

    queued -> running -> succeeded | failed | cancelled, with cancelling
    between running and cancelled. ``attempts`` counts worker starts (a
    worker that died is retried from the last checkpoint, up to ``max_attempts``).
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        CANCELLING = "cancelling", "Cancelling"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    ACTIVE = (Status.QUEUED, Status.RUNNING, Status.CANCELLING)
    TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Finished jobs keep their lineage (id and sha256 are in the published manifest) when a dataset is deleted.
    dataset = models.ForeignKey("datasets.Dataset", null=True, on_delete=models.SET_NULL, related_name="jobs")
    template = models.CharField(max_length=50)
    model_name = models.CharField(max_length=100)
    params = models.JSONField(default=dict)
    label_column = models.CharField(max_length=200)
    feature_columns = models.JSONField(default=list)
    validation_split = models.FloatField(default=0.2)
    seed = models.PositiveIntegerField(default=0)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    progress = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    error_code = models.CharField(max_length=64, blank=True)  # machine-readable reason of a failure or stop
    error_message = models.CharField(max_length=1000, blank=True)
    error_traceback = models.TextField(blank=True)  # operators only; never in the tenant API
    worker = models.CharField(max_length=200, blank=True)
    device = models.CharField(max_length=16, blank=True)
    compute_seconds = models.FloatField(default=0.0)  # the sum of its attempts' seconds (JobAttempt)
    # Budget reserved against the monthly compute quota while the job is queued or running; the job is stopped
    # (checkpoint kept) when it has used this much.
    max_runtime_seconds = models.PositiveIntegerField(null=True, blank=True)
    estimated_memory_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    timings = models.JSONField(default=dict, blank=True)  # seconds per phase of the last attempt
    model_version = models.PositiveIntegerField(null=True, blank=True)
    # The differential-privacy plan (training.privacy.plan) fixed before the job was created; {} = not private.
    privacy = models.JSONField(default=dict, blank=True)

    created_at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "created_at"]), models.Index(fields=["tenant", "status"])]

    def __str__(self) -> str:
        return f"{self.template} -> {self.model_name} ({self.status})"


class JobMetric(TenantOwnedModel):
    """Loss and metrics of one epoch, for train and validation."""

    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="epoch_metrics")
    epoch = models.PositiveIntegerField()
    values = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["epoch"]
        constraints = [models.UniqueConstraint(fields=["job", "epoch"], name="one_metric_row_per_epoch")]


class JobLogLine(TenantOwnedModel):
    """One line of a job's log (the API returns a bounded tail)."""

    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="log_lines")
    message = models.CharField(max_length=2000)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["id"]


class JobAttempt(TenantOwnedModel):
    """One worker start of a job, with its compute seconds: written by attempt number, so a retried write
    (after a lost connection) sets the same row again instead of adding twice, and an attempt that was killed
    is charged from its last heartbeat."""

    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="attempt_rows")
    number = models.PositiveIntegerField()
    worker = models.CharField(max_length=200, blank=True)
    device = models.CharField(max_length=16, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    compute_seconds = models.FloatField(default=0.0)
    outcome = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["job", "number"]
        constraints = [models.UniqueConstraint(fields=["job", "number"], name="one_row_per_job_attempt")]

    def __str__(self) -> str:
        return f"{self.job_id} attempt {self.number}"
