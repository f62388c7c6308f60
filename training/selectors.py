"""Reads of training jobs and the compute they use. Every function takes the tenant or a row already scoped to it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from tenants.models import Tenant
from training import privacy
from training.models import JobAttempt, JobLogLine, JobMetric, TrainingJob


def jobs_of(*, tenant: Tenant) -> QuerySet[TrainingJob]:
    return TrainingJob.objects.for_tenant(tenant)


def jobs_in_flight(*, tenant: Tenant | None = None) -> QuerySet[TrainingJob]:
    """Jobs holding a worker slot: dispatched (still queued on the broker), running or cancelling.

    The one count of a plan's concurrent jobs: the dispatcher holds tenants to it and ``/quotas`` reports it.
    Every tenant's when ``tenant`` is None (the dispatcher's view across tenants).
    """
    jobs = TrainingJob.objects.all() if tenant is None else TrainingJob.objects.for_tenant(tenant)
    return jobs.filter(
        Q(status__in=[TrainingJob.Status.RUNNING, TrainingJob.Status.CANCELLING])
        | Q(status=TrainingJob.Status.QUEUED, dispatched_at__isnull=False)
    )


# --- compute quota ------------------------------------------------------------------------


def month_start(*, now: datetime | None = None) -> datetime:
    return (now or timezone.now()).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def compute_seconds_by_device(*, tenant: Tenant, start: datetime, end: datetime | None = None) -> dict[str, float]:
    """The one measure of compute used: seconds the tenant's attempts ran, as ``{"gpu": s, "cpu": s}``, for the
    attempts last active in [start, end) (no end: until now). The quota and the bill both read it.

    An attempt is last active when it ended, else at its last heartbeat (a running one, or a killed one that never
    got ``ended_at`` from its worker), else at its start; it counts once, there. Jobs without attempt rows (run
    before attempts were recorded) count when they finished.
    """
    window = {"last_active__gte": start} | ({"last_active__lt": end} if end is not None else {})
    attempts = JobAttempt.objects.for_tenant(tenant).annotate(
        last_active=Coalesce("ended_at", "heartbeat_at", "started_at")
    )
    legacy = (
        TrainingJob.objects.for_tenant(tenant)
        .exclude(Exists(JobAttempt.objects.filter(job=OuterRef("pk"))))
        .annotate(last_active=Coalesce("finished_at", "started_at", "created_at"))
    )
    totals: dict[str, float] = {}
    for rows in (attempts.filter(**window), legacy.filter(**window)):
        for device, seconds in rows.values_list("device").annotate(total=Sum("compute_seconds")).order_by():
            key = "gpu" if device == "gpu" else "cpu"
            totals[key] = totals.get(key, 0.0) + float(seconds or 0.0)
    return totals


def compute_seconds_this_month(*, tenant: Tenant, now: datetime | None = None) -> float:
    """Seconds the tenant's attempts ran this month, on every device (``compute_seconds_by_device``)."""
    return sum(compute_seconds_by_device(tenant=tenant, start=month_start(now=now)).values())


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


def job_counts_by_status(*, timeout_seconds: float) -> tuple[dict[str, int], float | None]:
    """Jobs of every tenant in each status, and the age in seconds of the oldest still queued (None: none is).

    For the operators' metrics: one grouped count, given up after ``timeout_seconds`` on PostgreSQL
    (``statement_timeout``), so a slow database cannot hold a scrape.
    """
    from django.db import connection, transaction
    from django.db.models import Count, Min

    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL statement_timeout = %s", [int(timeout_seconds * 1000)])
        counts = {status: 0 for status in TrainingJob.Status.values}
        for row in TrainingJob.objects.order_by().values("status").annotate(jobs=Count("id")):
            counts[row["status"]] = row["jobs"]
        oldest = TrainingJob.objects.filter(status=TrainingJob.Status.QUEUED).aggregate(at=Min("created_at"))["at"]
    return counts, (timezone.now() - oldest).total_seconds() if oldest else None


# --- differential privacy budgets ------------------------------------------------------------


def privacy_jobs_counted(*, dataset) -> QuerySet[TrainingJob]:
    """The private jobs whose epsilon a dataset's budget has spent: queued, running, cancelling or succeeded, or
    failed or cancelled after they started (a job that never started saw no row and gives its share back)."""
    ended = [TrainingJob.Status.FAILED, TrainingJob.Status.CANCELLED]
    return (
        TrainingJob.objects.filter(tenant_id=dataset.tenant_id, dataset_id=dataset.pk)
        .exclude(privacy={})
        .filter(~Q(status__in=ended) | Q(started_at__isnull=False))
        .order_by("created_at", "id")
    )


def plain_jobs_reading(*, dataset) -> QuerySet[TrainingJob]:
    """Non-private jobs that read (or will read) the dataset's rows: queued, running or cancelling, or any that
    started. A privacy budget set over them would be no guarantee (``services.set_privacy_budget`` refuses)."""
    return (
        TrainingJob.objects.filter(tenant_id=dataset.tenant_id, dataset_id=dataset.pk, privacy={})
        .filter(Q(status__in=TrainingJob.ACTIVE) | Q(started_at__isnull=False))
        .order_by("created_at", "id")
    )


def privacy_spent(*, dataset, delta: float, extra_plan: dict[str, Any] | None = None) -> dict[str, Any]:
    """Epsilon at ``delta`` of every counted job on the dataset composed (``epsilon``), and with ``extra_plan``
    too (``epsilon_after``).

    The jobs' own accountant when they all used one and they make at most ``PRIVACY_MAX_BUDGET_JOBS`` events
    (jobs of one sample rate and noise multiplier are one event) of at most ``PRIVACY_MAX_STEPS`` steps each (PLD's
    cost grows with both), else RDP: a valid upper bound for any mix, in time linear in the events.
    """
    jobs = list(privacy_jobs_counted(dataset=dataset).values("id", "status", "model_name", "privacy", "created_at"))
    plans = [job["privacy"] for job in jobs]
    every = plans + ([extra_plan] if extra_plan else [])
    events = privacy.merged_events(plans)
    small = len(events) + bool(extra_plan) <= settings.PRIVACY_MAX_BUDGET_JOBS and all(
        event.count <= settings.PRIVACY_MAX_STEPS for event in events
    )
    accountant = privacy.budget_accountant(plans=every) if small else "rdp"
    spent, after = privacy.spent_and_after(plans=plans, extra=extra_plan, delta=delta, accountant=accountant)
    return {"epsilon": spent, "epsilon_after": after, "delta": delta, "accountant": accountant, "jobs": jobs}


def privacy_budget(*, dataset) -> dict[str, Any]:
    """What ``GET /datasets/<id>/privacy`` shows: the budget, what the counted jobs spent at its delta, what is
    left, and the jobs. Without a budget, spent is shown at the default delta of the whole dataset."""
    budget_epsilon, budget_delta = dataset.privacy_budget_epsilon, dataset.privacy_budget_delta
    delta = budget_delta if budget_delta is not None else privacy.default_delta(train_rows=dataset.row_count or 1)
    spent = privacy_spent(dataset=dataset, delta=delta)
    return {
        "dataset": str(dataset.pk),
        "budget": None if budget_epsilon is None else {"epsilon": budget_epsilon, "delta": budget_delta},
        "accountant": spent["accountant"],
        "delta": delta,
        "spent_epsilon": spent["epsilon"],
        "remaining_epsilon": None if budget_epsilon is None else max(0.0, budget_epsilon - spent["epsilon"]),
        "jobs": [
            {
                "job": str(job["id"]),
                "status": job["status"],
                "model_name": job["model_name"],
                "created_at": job["created_at"],
                "epsilon": job["privacy"].get("epsilon"),
                "delta": job["privacy"].get("delta"),
                "accountant": job["privacy"].get("accountant"),
                "noise_multiplier": job["privacy"].get("noise_multiplier"),
                "sample_rate": job["privacy"].get("sample_rate"),
                "steps": job["privacy"].get("steps"),
            }
            for job in spent["jobs"]
        ],
    }
