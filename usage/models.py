"""Metered use per tenant and day, rolled up from the other apps' own records.

The table keeps the name it had when usage lived in the ``tenants`` app (``db_table``).
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from tenants.models import TenantOwnedModel


class UsageRecord(TenantOwnedModel):
    """One day's use of one kind (per model version for predictions and explanations), rebuilt daily."""

    class Kind(models.TextChoices):
        GPU_SECONDS = "gpu_seconds", "GPU seconds"
        CPU_SECONDS = "cpu_seconds", "CPU seconds"
        STORAGE_BYTE_DAYS = "storage_byte_days", "Storage byte-days"
        PREDICTIONS = "predictions", "Predictions"
        EXPLANATIONS = "explanations", "Explanations"

    day = models.DateField(db_index=True)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    model_name = models.CharField(max_length=63, blank=True)  # predictions and explanations only
    version = models.PositiveIntegerField(null=True, blank=True)
    quantity = models.DecimalField(max_digits=24, decimal_places=3)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "tenants_usagerecord"
        ordering = ["day", "kind", "model_name", "version"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "day", "kind", "model_name", "version"], name="one_usage_record_per_day_kind_model"
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.kind} {self.quantity}"
