"""Reads of tenants, members and keys. Callers pass the tenant; nothing here crosses tenants."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from tenants import keys
from tenants.models import ApiKey, Membership, Tenant, User


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
    return Membership.objects.filter(user=user).select_related("tenant", "tenant__plan").order_by("created_at")


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
