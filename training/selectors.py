"""Reads of training jobs and the compute they use. Every function takes the tenant or a row already scoped to it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from tenants.models import Tenant
from training.models import JobAttempt, JobLogLine, JobMetric, TrainingJob


def jobs_of(*, tenant: Tenant) -> QuerySet[TrainingJob]:
    return TrainingJob.objects.for_tenant(tenant)


# --- compute quota ------------------------------------------------------------------------


def month_start(*, now: datetime | None = None) -> datetime:
    return (now or timezone.now()).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def compute_seconds_this_month(*, tenant: Tenant, now: datetime | None = None) -> float:
    """Seconds the tenant's attempts ran this month (a running one up to its last heartbeat).

    An attempt counts in the month it was last active: when it ended, else its last heartbeat, else its start (a
    killed attempt never gets ``ended_at`` from its worker and is charged up to its last heartbeat). Jobs without
    attempt rows (run before attempts were recorded) count by their finish, as they used to.
    """
    start = month_start(now=now)
    attempts = (
        JobAttempt.objects.for_tenant(tenant)
        .annotate(last_active=Coalesce("ended_at", "heartbeat_at", "started_at"))
        .filter(last_active__gte=start)
    )
    seconds = attempts.aggregate(total=Sum("compute_seconds"))["total"] or 0.0
    legacy = (
        TrainingJob.objects.for_tenant(tenant)
        .filter(Q(finished_at__gte=start) | Q(finished_at__isnull=True))
        .exclude(Exists(JobAttempt.objects.filter(job=OuterRef("pk"))))
        .aggregate(total=Sum("compute_seconds"))["total"]
    )
    return float(seconds + (legacy or 0.0))


def compute_seconds_by_device(*, tenant: Tenant, start: datetime, end: datetime) -> dict[str, float]:
    """Compute seconds of the attempts that ended in [start, end), as ``{"gpu": s, "cpu": s}`` (for metering).

    An attempt counts once, on the day it ended; a killed one ends at its last heartbeat. Jobs without attempt rows
    (run before attempts were recorded) count on the day they finished.
    """
    totals: dict[str, float] = {}
    attempts = JobAttempt.objects.for_tenant(tenant).filter(ended_at__gte=start, ended_at__lt=end)
    legacy = (
        TrainingJob.objects.for_tenant(tenant)
        .filter(finished_at__gte=start, finished_at__lt=end)
        .exclude(Exists(JobAttempt.objects.filter(job=OuterRef("pk"))))
    )
    for rows in (attempts, legacy):
        for device, seconds in rows.values_list("device").annotate(total=Sum("compute_seconds")).order_by():
            key = "gpu" if device == "gpu" else "cpu"
            totals[key] = totals.get(key, 0.0) + float(seconds or 0.0)
    return totals


def unused_budget(*, max_runtime_seconds: int | None, compute_seconds: float) -> float:
    """What a job may still run: its budget less what its attempts used (0 for jobs without a budget)."""
    return max(0.0, (max_runtime_seconds or 0) - compute_seconds)


def compute_seconds_reserved(*, tenant: Tenant, exclude_job_id=None) -> float:
    """The unused runtime budgets of the tenant's queued and running jobs: promised, so not available to new work."""
    jobs = TrainingJob.objects.for_tenant(tenant).filter(status__in=TrainingJob.ACTIVE)
    if exclude_job_id is not None:
        jobs = jobs.exclude(pk=exclude_job_id)
    return sum(
        unused_budget(max_runtime_seconds=budget, compute_seconds=spent)
        for budget, spent in jobs.values_list("max_runtime_seconds", "compute_seconds")
    )


def compute_seconds_remaining(*, tenant: Tenant) -> float:
    """The month's compute quota less what ran and what queued and running jobs have reserved."""
    quota = tenant.plan.compute_seconds_per_month
    return quota - compute_seconds_this_month(tenant=tenant) - compute_seconds_reserved(tenant=tenant)


def job_log_tail(*, job, lines: int) -> list[dict[str, Any]]:
    tail = JobLogLine.objects.filter(tenant_id=job.tenant_id, job=job).order_by("-id")[:lines]
    return [{"time": line.created_at, "message": line.message} for line in reversed(list(tail))]


def job_metric_series(*, job) -> list[dict[str, Any]]:
    rows = JobMetric.objects.filter(tenant_id=job.tenant_id, job=job).order_by("epoch")
    return [{"epoch": row.epoch, **row.values} for row in rows]


def dataset_in_use(*, dataset) -> bool:
    """Whether an unfinished training job reads this dataset."""
    return TrainingJob.objects.filter(dataset=dataset, status__in=TrainingJob.ACTIVE).exists()
