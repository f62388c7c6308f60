"""Reads of datasets. Every function takes the tenant or a row already scoped to it."""

from __future__ import annotations

from itertools import islice
from typing import Any

from django.db.models import Max, QuerySet, Sum

from core import storage
from tenants.models import Tenant
from training.models import Dataset, TrainingJob
from training.profiling import json_safe
from training.readers import open_rows

# Datasets whose objects occupy storage (invalid ones have theirs removed).
STORED_STATUSES = [Dataset.Status.UPLOADING, Dataset.Status.VALIDATING, Dataset.Status.READY]


def datasets_of(*, tenant: Tenant) -> QuerySet[Dataset]:
    return Dataset.objects.for_tenant(tenant)


def jobs_of(*, tenant: Tenant) -> QuerySet[TrainingJob]:
    return TrainingJob.objects.for_tenant(tenant)


def storage_bytes_used(*, tenant: Tenant) -> int:
    """Bytes of the tenant's stored dataset objects (for quotas and metering)."""
    total = datasets_of(tenant=tenant).filter(status__in=STORED_STATUSES).aggregate(total=Sum("size_bytes"))["total"]
    return int(total or 0)


def next_version(*, tenant: Tenant, name: str) -> int:
    latest = datasets_of(tenant=tenant).filter(name=name).aggregate(v=Max("version"))["v"]
    return (latest or 0) + 1


def duplicate_of(*, tenant: Tenant, sha256: str, exclude_id=None) -> Dataset | None:
    """An earlier dataset of the same tenant with identical content, if any."""
    same = datasets_of(tenant=tenant).filter(sha256=sha256).exclude(pk=exclude_id).exclude(status="invalid")
    return same.order_by("created_at").first()


def preview_rows(*, dataset: Dataset, rows: int) -> dict[str, Any]:
    """The first ``rows`` rows of a stored dataset, as stored (PII already hashed or dropped)."""
    with storage.open_reader(dataset.object_key, buffer_size=1024 * 1024) as stream:
        columns, records = open_rows(dataset.format, stream)
        first = [row for _, row in islice(records, rows)]
    return {"columns": columns, "rows": [[json_safe(row.get(c)) for c in columns] for row in first]}


def job_log_tail(*, job, lines: int) -> list[dict[str, Any]]:
    from training.models import JobLogLine

    tail = JobLogLine.objects.filter(tenant_id=job.tenant_id, job=job).order_by("-id")[:lines]
    return [{"time": line.created_at, "message": line.message} for line in reversed(list(tail))]


def job_metric_series(*, job) -> list[dict[str, Any]]:
    from training.models import JobMetric

    rows = JobMetric.objects.filter(tenant_id=job.tenant_id, job=job).order_by("epoch")
    return [{"epoch": row.epoch, **row.values} for row in rows]
