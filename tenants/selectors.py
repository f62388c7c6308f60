"""Reads of tenants, members and keys, and the storage a tenant uses. Callers pass the tenant.

Only ``recent_credential_changes`` (the serving process's key cache) crosses tenants.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.apps import apps
from django.db.models import Count, Max, QuerySet, Sum
from django.utils import timezone

from tenants import keys
from tenants.models import (
    ApiKey,
    AuditEvent,
    Membership,
    Tenant,
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


def storage_bytes_used(*, tenant: Tenant) -> int:
    """Bytes of the tenant's objects in storage, for the quota and the bill alike: every model that declares
    ``STORED_BYTES`` (datasets stored or on their way, published model versions), summed.

    A multipart upload's dataset counts from its start with its declared size, and S3 takes no more than that (each
    part URL signs its length), so bytes in flight are counted before they arrive.
    """
    total = 0
    for model in apps.get_models():
        declared = getattr(model, "STORED_BYTES", None)
        if declared is not None:
            field, stored = declared
            total += model.objects.for_tenant(tenant).filter(stored).aggregate(total=Sum(field))["total"] or 0
    return int(total)
