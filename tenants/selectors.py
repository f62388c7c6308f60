"""Reads of tenants, members and keys. Callers pass the tenant.

Only ``every_tenants_bill`` (operators) and ``recent_credential_changes`` (the serving process's key cache)
cross tenants.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, Max, QuerySet, Sum
from django.utils import timezone

from tenants import billing, keys
from tenants.models import (
    ApiKey,
    AuditEvent,
    Membership,
    Plan,
    PlanPrice,
    Tenant,
    TenantPlanPeriod,
    UsageRecord,
    User,
)


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


def key_rights(*, key: ApiKey) -> keys.KeyRights:
    """What ``key`` may do now: its own rights narrowed by every ancestor key and every creator's membership.

    Read on every use (API and serving), so a removal, a demotion or a parent's revocation binds the key at
    once, however it happened. Costs one query per ancestor key plus one for the creators' memberships.
    """
    chain = [key]
    while chain[-1].parent_id is not None:
        if len(chain) > keys.MAX_KEY_DEPTH:  # made before the cap, or by hand: refused rather than walked
            return keys.refused(keys.PARENT_UNUSABLE)
        parent = ApiKey.objects.for_tenant(key.tenant_id).filter(pk=chain[-1].parent_id).first()
        if parent is None or any(parent.pk == seen.pk for seen in chain):
            return keys.refused(keys.PARENT_UNUSABLE)
        chain.append(parent)
    creators = {link.created_by_id for link in chain if link.created_by_id is not None}
    roles = dict(
        Membership.objects.for_tenant(key.tenant_id)
        .filter(user_id__in=creators, user__is_active=True)
        .values_list("user_id", "role")
    )
    now = timezone.now()
    rights: keys.KeyRights | None = None
    for link in reversed(chain):  # from the key a person (or an operator) made down to this one
        rights = keys.narrow(
            role=link.role,
            scopes=link.scopes,
            revoked=link.revoked_at is not None,
            expired=not link.is_usable(now) and link.revoked_at is None,
            creator_role=keys.NO_CREATOR if link.created_by_id is None else roles.get(link.created_by_id),
            parent=rights,
        )
    return rights if rights is not None else keys.refused(keys.REVOKED)  # the chain is never empty


def key_depth(*, key: ApiKey) -> int:
    """How many keys stand above ``key`` (0 for a key a person or an operator made)."""
    depth, parent_id = 0, key.parent_id
    while parent_id is not None and depth <= keys.MAX_KEY_DEPTH:
        depth += 1
        parent_id = (
            ApiKey.objects.for_tenant(key.tenant_id).filter(pk=parent_id).values_list("parent_id", flat=True).first()
        )
    return depth


def key_tree(*, tenant: Tenant, roots: list[ApiKey]) -> list[tuple[ApiKey, ApiKey]]:
    """Every key made (directly or not) by ``roots``, each with the key that made it, parents before children."""
    found: list[tuple[ApiKey, ApiKey]] = []
    seen = {root.pk for root in roots}
    level = {root.pk: root for root in roots}
    while level:
        children = list(ApiKey.objects.for_tenant(tenant).filter(parent_id__in=list(level)).exclude(pk__in=seen))
        found.extend((child, level[child.parent_id]) for child in children)
        seen.update(child.pk for child in children)
        level = {child.pk: child for child in children}
    return found


# Audit actions after which a cached key may act with less (the serving process drops its cached grants).
CREDENTIAL_ACTIONS = ("api_key.revoke", "member.role", "member.remove", "user.deactivate")


def recent_credential_changes(*, seconds: int) -> dict[str, tuple[int, str]]:
    """Per tenant, the count and latest time of the last ``seconds``' audit events that narrow some key's rights.

    The serving process polls this twice a second and drops the cached grants of each tenant whose pair changed.
    One row per tenant (not per event), so a tenant revoking a large tree of keys costs every process nothing more.
    """
    since = timezone.now() - timedelta(seconds=seconds)
    rows = (
        AuditEvent.objects.filter(created_at__gte=since, action__in=CREDENTIAL_ACTIONS)
        .values("tenant_id")
        .annotate(events=Count("id"), latest=Max("created_at"))
        .values_list("tenant_id", "events", "latest")
    )
    return {str(tenant_id): (events, latest.isoformat()) for tenant_id, events, latest in rows}


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
                "used": training_selectors.storage_bytes_used(tenant=tenant),
                "limit": plan.storage_bytes,
            },
            {"name": "dataset_bytes", "used": None, "limit": plan.max_dataset_bytes},
            {"name": "predictions_per_minute", "used": None, "limit": plan.predictions_per_minute},
        ],
    }
