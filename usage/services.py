"""Writes of usage: the daily roll-up of each tenant's compute, storage, predictions and explanations into usage
records."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import Sum

from events import services as events
from serving.models import PredictionUsage
from tenants import selectors as tenant_selectors
from tenants.models import Tenant
from training import selectors as training_selectors
from usage.models import UsageRecord


def aggregate_usage(*, day: date, tenant: Tenant | None = None) -> int:
    """Rebuild the day's usage records (every tenant, or one) from jobs, storage and metered predictions/explanations.

    Idempotent: the day's rows are replaced in one transaction, so the periodic task can run it as often as it
    likes. Each quantity has one definition, shared with the quotas: compute is
    ``training.selectors.compute_seconds_by_device`` for the day (an attempt counts on the day it was last active,
    so a running one moves to the day it ends when that day is rebuilt); storage is
    ``tenants.selectors.storage_bytes_used`` when the aggregation runs, times one day; predictions are the serving
    process's hourly meters summed per day, and explanations (metered apart, priced apart) likewise.
    """
    start = datetime.combine(day, time.min, tzinfo=UTC)
    end = start + timedelta(days=1)
    tenants = [tenant] if tenant is not None else list(Tenant.objects.all())
    written = 0
    for current in tenants:
        rows: list[UsageRecord] = []
        compute = training_selectors.compute_seconds_by_device(tenant=current, start=start, end=end)
        for device, seconds in sorted(compute.items()):
            kind = UsageRecord.Kind.GPU_SECONDS if device == "gpu" else UsageRecord.Kind.CPU_SECONDS
            rows.append(UsageRecord(tenant=current, day=day, kind=kind, quantity=Decimal(str(round(seconds, 3)))))
        stored = tenant_selectors.storage_bytes_used(tenant=current)
        if stored:
            rows.append(UsageRecord(tenant=current, day=day, kind=UsageRecord.Kind.STORAGE_BYTE_DAYS, quantity=stored))
        served = (
            PredictionUsage.objects.for_tenant(current)
            .filter(period_start__gte=start, period_start__lt=end)
            .values_list("model_name", "version")
            .annotate(predicted=Sum("predictions"), explained=Sum("explanations"))
        )
        for model_name, version, predicted, explained in served:
            for kind, count in ((UsageRecord.Kind.PREDICTIONS, predicted), (UsageRecord.Kind.EXPLANATIONS, explained)):
                if count:
                    rows.append(
                        UsageRecord(
                            tenant=current, day=day, kind=kind, model_name=model_name, version=version, quantity=count
                        )
                    )
        with transaction.atomic():
            UsageRecord.objects.for_tenant(current).filter(day=day).delete()
            UsageRecord.objects.bulk_create(rows)
        written += len(rows)
        check_quotas(tenant=current, storage_bytes=stored)
    return written


def check_quotas(*, tenant: Tenant, storage_bytes: int | None = None) -> list[str]:
    """Send ``quota.nearly_used`` for each monthly quota past its threshold (once per quota and month).

    Compute counts the seconds run this month (submissions also count what queued jobs reserved, in
    ``training.services``); storage counts the bytes stored now. Returns the quotas alerted by this call.
    """
    plan, period = tenant.plan, training_selectors.month_start().strftime("%Y-%m")
    stored = tenant_selectors.storage_bytes_used(tenant=tenant) if storage_bytes is None else storage_bytes
    measured = {
        "compute_seconds_per_month": (
            training_selectors.compute_seconds_this_month(tenant=tenant),
            plan.compute_seconds_per_month,
        ),
        "storage_bytes": (stored, plan.storage_bytes),
    }
    return [
        quota
        for quota, (used, limit) in measured.items()
        if events.quota_nearly_used(tenant=tenant, quota=quota, used=float(used), limit=float(limit), period=period)
    ]
