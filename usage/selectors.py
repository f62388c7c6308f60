"""Reads of usage, bills and quotas. Callers pass the tenant; only ``every_tenants_bill`` (operators) crosses
tenants."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

from django.db.models import Sum

from tenants import selectors as tenant_selectors
from tenants.models import Plan, PlanPrice, Tenant, TenantPlanPeriod
from training import selectors as training_selectors
from usage import billing
from usage.models import UsageRecord


def usage(*, tenant: Tenant, start: date, end: date, group_by: str) -> list[dict[str, Any]]:
    """Usage records from ``start`` to ``end`` (inclusive), summed by day and kind, by model (predictions and
    explanations per version, each row naming its kind), or by kind."""
    records = UsageRecord.objects.for_tenant(tenant).filter(day__gte=start, day__lte=end)
    if group_by == "day":
        rows = records.values("day", "kind").annotate(quantity=Sum("quantity")).order_by("day", "kind")
    elif group_by == "model":
        rows = (
            records.filter(kind__in=[UsageRecord.Kind.PREDICTIONS, UsageRecord.Kind.EXPLANATIONS])
            .values("model_name", "version", "kind")
            .annotate(quantity=Sum("quantity"))
            .order_by("model_name", "version", "-kind")  # a version's predictions, then its explanations
        )
    else:
        rows = records.values("kind").annotate(quantity=Sum("quantity")).order_by("kind")
    return [{**row, "quantity": str(row["quantity"])} for row in rows]


def _month_bounds(month: date) -> tuple[date, date]:
    first = month.replace(day=1)
    return first, first.replace(day=billing.days_in(first))


def _price_schedules(*, plans: list[Plan], first: date, last: date) -> dict[Any, list[billing.Prices]]:
    """Each plan's prices in force during the month (one query): the opening set, then each change."""
    history: dict[Any, list[billing.Prices]] = {}
    for row in PlanPrice.objects.filter(plan__in=plans, effective_from__lte=last):
        history.setdefault(row.plan_id, []).append(billing.Prices.of(row))
    return {
        plan.pk: [
            replace(prices, plan=plan.slug)
            for prices in billing.month_schedule(
                history=history.get(plan.pk, []), fallback=billing.Prices.of(plan), first=first, last=last
            )
        ]
        for plan in plans
    }


def _tenant_schedules(*, tenants: list[Tenant], first: date, last: date) -> dict[Any, list[billing.Prices]]:
    """Each tenant's price sets for the month, on the plan it had each day (three queries for any number)."""
    periods: dict[Any, list[tuple[date, Any]]] = {tenant.pk: [] for tenant in tenants}
    rows = TenantPlanPeriod.objects.filter(tenant__in=tenants, effective_from__lte=last)
    for tenant_id, effective_from, plan_id in rows.values_list("tenant_id", "effective_from", "plan_id"):
        periods[tenant_id].append((effective_from, plan_id))
    for tenant in tenants:  # a tenant made without the services has no history: its plan now, all month
        periods[tenant.pk] = periods[tenant.pk] or [(date.min, tenant.plan_id)]
    plan_ids = {plan_id for history in periods.values() for _, plan_id in history}
    schedules = _price_schedules(plans=list(Plan.objects.filter(pk__in=plan_ids)), first=first, last=last)
    return {
        tenant.pk: billing.tenant_schedule(plan_periods=periods[tenant.pk], schedules=schedules, first=first, last=last)
        for tenant in tenants
    }


def _bill(first: date, daily: dict[date, dict[str, Decimal]], schedule: list[billing.Prices]) -> dict[str, Any]:
    """A month's bill: each day's usage on the plan and at the prices in force that day; ``prices`` lists them."""
    items = billing.bill_items(month=first, daily=daily, schedule=schedule)
    return {
        "month": first.strftime("%Y-%m"),
        "plan": schedule[-1].plan,  # the plan at the month's end (``prices`` names each plan used)
        "currency": schedule[0].currency,
        "prices": [prices.as_dict() for prices in schedule],
        "line_items": [item.as_dict() for item in items],
        "total": str(billing.total(items)),
    }


def billing_estimate(*, tenant: Tenant, month: date) -> dict[str, Any]:
    first, last = _month_bounds(month)
    daily: dict[date, dict[str, Decimal]] = {}
    rows = (
        UsageRecord.objects.for_tenant(tenant)
        .filter(day__gte=first, day__lte=last)
        .values_list("day", "kind")
        .annotate(total=Sum("quantity"))
    )
    for day, kind, quantity in rows:
        daily.setdefault(day, {})[kind] = Decimal(quantity)
    return _bill(first, daily, _tenant_schedules(tenants=[tenant], first=first, last=last)[tenant.pk])


def every_tenants_bill(*, month: date) -> list[dict[str, Any]]:
    """Operators only (the admin console): each tenant's usage and bill for the month, in five queries."""
    first, last = _month_bounds(month)
    daily: dict[Any, dict[date, dict[str, Decimal]]] = {}
    rows = (
        UsageRecord.objects.filter(day__gte=first, day__lte=last)
        .values_list("tenant_id", "day", "kind")
        .annotate(total=Sum("quantity"))
    )
    for tenant_id, day, kind, total in rows:
        daily.setdefault(tenant_id, {}).setdefault(day, {})[kind] = Decimal(total)
    tenants = list(Tenant.objects.select_related("plan").order_by("slug"))
    schedules = _tenant_schedules(tenants=tenants, first=first, last=last)
    return [{"tenant": tenant, **_bill(first, daily.get(tenant.pk, {}), schedules[tenant.pk])} for tenant in tenants]


def quota_use(*, tenant: Tenant) -> dict[str, Any]:
    """Each plan limit beside what the tenant uses of it now.

    Compute counts the seconds attempts ran this month (a killed one up to its last heartbeat) and, apart, the
    unused budgets queued and running jobs have reserved against the same quota.
    """
    plan = tenant.plan
    running = training_selectors.jobs_in_flight(tenant=tenant).count()
    return {
        "plan": plan.slug,
        "quotas": [
            {"name": "concurrent_jobs", "used": running, "limit": plan.max_concurrent_jobs},
            {
                "name": "compute_seconds_this_month",
                "used": round(training_selectors.compute_seconds_this_month(tenant=tenant), 3),
                "limit": plan.compute_seconds_per_month,
            },
            {
                "name": "compute_seconds_reserved",
                "used": round(training_selectors.compute_seconds_reserved(tenant=tenant), 3),
                "limit": plan.compute_seconds_per_month,
            },
            {"name": "job_memory_bytes", "used": None, "limit": plan.max_job_memory_bytes},
            {
                "name": "storage_bytes",
                "used": tenant_selectors.storage_bytes_used(tenant=tenant),
                "limit": plan.storage_bytes,
            },
            {"name": "dataset_bytes", "used": None, "limit": plan.max_dataset_bytes},
            {"name": "predictions_per_minute", "used": None, "limit": plan.predictions_per_minute},
        ],
    }
