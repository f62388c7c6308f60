"""Reads of tenants, members and keys. Callers pass the tenant; only ``every_tenants_bill`` crosses tenants."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet, Sum

from tenants import billing, keys
from tenants.models import ApiKey, Membership, Tenant, UsageRecord, User


def api_key_for_secret(*, raw_key: str) -> ApiKey | None:
    """The key row whose secret is ``raw_key`` (compared in constant time), or None."""
    prefix = keys.parse_prefix(raw_key)
    if prefix is None:
        # Still hash once so a malformed key costs the same as a wrong one.
        keys.digest_matches(raw_key, "0" * 64)
        return None
    key = ApiKey.objects.select_related("tenant", "tenant__plan").filter(prefix=prefix).first()
    if key is None:
        keys.digest_matches(raw_key, "0" * 64)
        return None
    return key if keys.digest_matches(raw_key, key.key_hash) else None


def memberships_of(*, user: User) -> QuerySet[Membership]:
    return Membership.objects.filter(user=user).select_related("tenant", "tenant__plan", "user").order_by("created_at")


def membership_in(*, user: User, tenant_hint: str | None) -> Membership | None:
    """The user's membership in the tenant named by id or slug, or their only one."""
    memberships = memberships_of(user=user)
    if tenant_hint:
        by_slug = memberships.filter(tenant__slug=tenant_hint).first()
        if by_slug is not None:
            return by_slug
        try:
            tenant_id = uuid.UUID(tenant_hint)
        except ValueError:
            return None
        return memberships.filter(tenant_id=tenant_id).first()
    return memberships.first() if memberships.count() == 1 else None


def members_of(*, tenant: Tenant) -> QuerySet[Membership]:
    return Membership.objects.for_tenant(tenant).select_related("user")


def owner_count(*, tenant: Tenant) -> int:
    return Membership.objects.for_tenant(tenant).filter(role="owner").count()


# --- Usage, billing and quotas ------------------------------------------------


def usage(*, tenant: Tenant, start: date, end: date, group_by: str) -> list[dict[str, Any]]:
    """Usage records from ``start`` to ``end`` (inclusive), summed by day and kind, by model, or by kind."""
    records = UsageRecord.objects.for_tenant(tenant).filter(day__gte=start, day__lte=end)
    if group_by == "day":
        rows = records.values("day", "kind").annotate(quantity=Sum("quantity")).order_by("day", "kind")
    elif group_by == "model":
        rows = (
            records.filter(kind=UsageRecord.Kind.PREDICTIONS)
            .values("model_name", "version")
            .annotate(quantity=Sum("quantity"))
            .order_by("model_name", "version")
        )
    else:
        rows = records.values("kind").annotate(quantity=Sum("quantity")).order_by("kind")
    return [{**row, "quantity": str(row["quantity"])} for row in rows]


def _month_bounds(month: date) -> tuple[date, date]:
    first = month.replace(day=1)
    return first, first.replace(day=billing.days_in(first))


def _bill(tenant: Tenant, first: date, totals: dict[str, Decimal]) -> dict[str, Any]:
    items = billing.line_items(plan=tenant.plan, month=first, totals=totals)
    return {
        "month": first.strftime("%Y-%m"),
        "plan": tenant.plan.slug,
        "currency": tenant.plan.currency,
        "line_items": [item.as_dict() for item in items],
        "total": str(billing.total(items)),
    }


def billing_estimate(*, tenant: Tenant, month: date) -> dict[str, Any]:
    first, last = _month_bounds(month)
    totals = {
        kind: Decimal(quantity)
        for kind, quantity in UsageRecord.objects.for_tenant(tenant)
        .filter(day__gte=first, day__lte=last)
        .values_list("kind")
        .annotate(total=Sum("quantity"))
    }
    return _bill(tenant, first, totals)


def every_tenants_bill(*, month: date) -> list[dict[str, Any]]:
    """Operators only (the admin console): each tenant's usage and bill for the month, in two queries."""
    first, last = _month_bounds(month)
    totals: dict[Any, dict[str, Decimal]] = {}
    rows = (
        UsageRecord.objects.filter(day__gte=first, day__lte=last)
        .values_list("tenant_id", "kind")
        .annotate(total=Sum("quantity"))
    )
    for tenant_id, kind, total in rows:
        totals.setdefault(tenant_id, {})[kind] = Decimal(total)
    return [
        {"tenant": tenant, **_bill(tenant, first, totals.get(tenant.pk, {}))}
        for tenant in Tenant.objects.select_related("plan").order_by("slug")
    ]


def quota_use(*, tenant: Tenant) -> dict[str, Any]:
    """Each plan limit beside what the tenant uses of it now."""
    from training import job_services
    from training import selectors as training_selectors
    from training.models import TrainingJob

    plan = tenant.plan
    in_flight = [TrainingJob.Status.RUNNING, TrainingJob.Status.CANCELLING]
    running = TrainingJob.objects.for_tenant(tenant).filter(status__in=in_flight).count()
    return {
        "plan": plan.slug,
        "quotas": [
            {"name": "concurrent_jobs", "used": running, "limit": plan.max_concurrent_jobs},
            {
                "name": "compute_seconds_this_month",
                "used": round(job_services.compute_seconds_this_month(tenant=tenant), 3),
                "limit": plan.compute_seconds_per_month,
            },
            {
                "name": "storage_bytes",
                "used": training_selectors.storage_bytes_used(tenant=tenant),
                "limit": plan.storage_bytes,
            },
            {"name": "dataset_bytes", "used": None, "limit": plan.max_dataset_bytes},
            {"name": "predictions_per_minute", "used": None, "limit": plan.predictions_per_minute},
        ],
    }
