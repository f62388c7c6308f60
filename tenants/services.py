"""Writes for tenants, members and API keys. Views, commands and the admin call these."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from core.errors import ConflictError, ForbiddenError, NotFoundError, ServiceError
from tenants import audit, keys, selectors
from tenants.models import (
    PLAN_FIELDS,
    PRICE_FIELDS,
    ROLE_RANK,
    ROLE_SCOPES,
    ApiKey,
    Membership,
    Plan,
    PlanPrice,
    Role,
    Scope,
    Tenant,
    TenantPlanPeriod,
    User,
)

DEFAULT_PLAN_SLUG = "starter"
LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True)
class CreatedKey:
    """A new key row and its secret, which exists only in this object."""

    api_key: ApiKey
    raw_key: str


def default_plan() -> Plan:
    plan, _ = Plan.objects.get_or_create(slug=DEFAULT_PLAN_SLUG, defaults={"name": "Starter"})
    return plan


def _unique_slug(name: str) -> str:
    base = slugify(name)[:50] or "tenant"
    slug, counter = base, 2
    while Tenant.objects.filter(slug=slug).exists():
        slug = f"{base}-{counter}"
        counter += 1
    return slug


@transaction.atomic
def create_tenant(
    *,
    name: str,
    owner_email: str | None,
    slug: str | None = None,
    plan: Plan | None = None,
    key_name: str = "initial",
) -> tuple[Tenant, CreatedKey | None]:
    """Create a tenant with its owner and a first all-scope owner key.

    Without ``owner_email`` (the admin's add form, whose member rows then go through ``add_member``) the
    tenant starts with no member and no key.
    """
    name = name.strip()
    if not name:
        raise ServiceError("A tenant needs a name.", code="invalid_name")
    if slug and Tenant.objects.filter(slug=slug).exists():
        raise ConflictError(f"A tenant with slug {slug!r} already exists.", code="slug_taken")
    tenant = Tenant.objects.create(name=name, slug=slug or _unique_slug(name), plan=plan or default_plan())
    TenantPlanPeriod.objects.create(tenant=tenant, plan=tenant.plan, effective_from=timezone.localdate())
    owner = _user_for_email(owner_email) if owner_email else None
    if owner is not None:
        Membership.objects.create(tenant=tenant, user=owner, role=Role.OWNER)
    details = {"owner": owner.email if owner else None, "plan": tenant.plan.slug}
    audit.record(tenant=tenant, action="tenant.create", target=tenant, details=details)
    if owner is None:
        return tenant, None
    created = create_api_key(
        tenant=tenant,
        name=key_name,
        scopes=[s.value for s in Scope],
        role=Role.OWNER,
        acting_role=Role.OWNER,
        created_by=owner,  # the founder's key follows the founder: demoted or removed, it follows at once
    )
    return tenant, created


@transaction.atomic
def set_tenant_status(*, tenant: Tenant, status: str) -> Tenant:
    if status not in Tenant.Status.values:
        raise ServiceError(f"Unknown tenant status {status!r}.", code="invalid_status")
    previous = tenant.status
    tenant.status = status
    tenant.save(update_fields=["status"])
    audit.record(tenant=tenant, action="tenant.status", target=tenant, details={"status": status, "previous": previous})
    return tenant


@transaction.atomic
def rename_tenant(*, tenant: Tenant, name: str) -> Tenant:
    """Change a tenant's display name (its slug, which keys, pins and URLs use, stays)."""
    name = name.strip()
    if not name:
        raise ServiceError("A tenant needs a name.", code="invalid_name")
    previous = tenant.name
    if name != previous:
        tenant.name = name
        tenant.save(update_fields=["name"])
        audit.record(tenant=tenant, action="tenant.rename", target=tenant, details={"name": name, "previous": previous})
    return tenant


@transaction.atomic
def set_tenant_plan(*, tenant: Tenant, plan: Plan) -> Tenant:
    """Move a tenant to another plan: its limits apply at once; its usage is billed on that plan from today
    (earlier days keep the plan they had, so a past month's bill does not change)."""
    previous = tenant.plan
    if plan.pk != previous.pk:
        tenant.plan = plan
        tenant.save(update_fields=["plan"])
        TenantPlanPeriod.objects.update_or_create(
            tenant=tenant, effective_from=timezone.localdate(), defaults={"plan": plan}
        )
        audit.record(
            tenant=tenant, action="tenant.plan", target=tenant, details={"plan": plan.slug, "previous": previous.slug}
        )
    return tenant


# --- Plans and their prices ----------------------------------------------------------
#
# Plans belong to no tenant, but a change to one changes what every tenant on it may use and pays. So each
# change writes one audit row per tenant on the plan (the audit log is per tenant, and that tenant's owners
# read it through the API); the price history itself (PlanPrice rows, never edited) is the platform-level
# record of what was charged when.

# The seed row of a plan's price history: its first prices applied since before any usage.
PRICE_HISTORY_START = date(1970, 1, 1)


def _audit_plan(plan: Plan, *, action: str, details: dict) -> int:
    tenants = list(Tenant.objects.filter(plan=plan).only("pk"))
    for tenant in tenants:
        audit.record(tenant=tenant, action=action, target=plan, details={"plan": plan.slug, **details})
    return len(tenants)


def _check_prices(prices: dict) -> dict:
    unknown = sorted(set(prices) - set(PRICE_FIELDS))
    if unknown:
        raise ServiceError("Unknown price fields.", code="invalid_prices", details={"unknown": unknown})
    checked = {}
    for name, value in prices.items():
        if name == "currency":
            if not (isinstance(value, str) and len(value) == 3 and value.isascii() and value.isalpha()):
                raise ServiceError("currency is a 3-letter code.", code="invalid_prices", details={name: str(value)})
            checked[name] = value.upper()
            continue
        try:
            amount = Decimal(str(value))
        except ArithmeticError:
            raise ServiceError(f"{name} is not a number.", code="invalid_prices", details={name: str(value)}) from None
        if not amount.is_finite() or amount < 0:
            raise ServiceError(f"{name} must be zero or more.", code="invalid_prices", details={name: str(value)})
        checked[name] = amount
    return checked


@transaction.atomic
def create_plan(*, slug: str, name: str, prices: dict | None = None, **limits) -> Plan:
    """A new plan and the first row of its price history (in force since before any usage)."""
    unknown = sorted(set(limits) - set(PLAN_FIELDS))
    if unknown:
        raise ServiceError("Unknown plan fields.", code="invalid_plan", details={"unknown": unknown})
    if Plan.objects.filter(slug=slug).exists():
        raise ConflictError(f"A plan with slug {slug!r} already exists.", code="slug_taken")
    plan = Plan.objects.create(slug=slug, name=name, **limits, **_check_prices(prices or {}))
    _seed_price_history(plan)
    return plan


def _seed_price_history(plan: Plan) -> None:
    """The first row of a plan's price history: its current prices, in force since before any usage."""
    PlanPrice.objects.create(
        plan=plan, effective_from=PRICE_HISTORY_START, **{field: getattr(plan, field) for field in PRICE_FIELDS}
    )


@transaction.atomic
def update_plan(*, plan: Plan, changes: dict) -> Plan:
    """Change a plan's name or limits (not prices: :func:`set_plan_prices`); audited for each tenant on it."""
    unknown = sorted(set(changes) - set(PLAN_FIELDS))
    if unknown:
        raise ServiceError("Unknown plan fields.", code="invalid_plan", details={"unknown": unknown})
    locked = Plan.objects.select_for_update().get(pk=plan.pk)
    changed = {name: value for name, value in changes.items() if getattr(locked, name) != value}
    if "slug" in changed and Plan.objects.filter(slug=changed["slug"]).exclude(pk=plan.pk).exists():
        raise ConflictError(f"A plan with slug {changed['slug']!r} already exists.", code="slug_taken")
    if not changed:
        return locked
    previous = {name: getattr(locked, name) for name in changed}
    for name, value in changed.items():
        setattr(locked, name, value)
    locked.save(update_fields=list(changed))
    _audit_plan(
        locked,
        action="plan.update",
        details={"changes": {n: {"from": str(previous[n]), "to": str(v)} for n, v in changed.items()}},
    )
    for name in changed:
        setattr(plan, name, getattr(locked, name))
    return locked


@transaction.atomic
def set_plan_prices(*, plan: Plan, prices: dict, effective_from: date | None = None) -> PlanPrice:
    """Append the plan's new prices to its history, in force from ``effective_from`` (today by default).

    Past days keep the prices they were used at: a date before today is refused, and a plan with no
    history first records its current prices as in force since the beginning. A second change for the same
    day replaces that day's row. The currency may change only from a month's first day (a bill has one
    currency). The plan's own price fields follow once the new prices are in force today.
    """
    today = timezone.now().date()
    effective_from = effective_from or today
    if effective_from < today:
        raise ServiceError(
            "Prices cannot change in the past: past days are billed at the prices in force then.",
            code="price_change_in_past",
            details={"effective_from": effective_from.isoformat(), "today": today.isoformat()},
        )
    checked = _check_prices(prices)
    locked = Plan.objects.select_for_update().get(pk=plan.pk)
    if not PlanPrice.objects.filter(plan=locked).exists():
        _seed_price_history(locked)
    in_force = PlanPrice.objects.filter(plan=locked, effective_from__lte=effective_from).order_by("-effective_from")[0]
    values = {field: checked.get(field, getattr(in_force, field)) for field in PRICE_FIELDS}
    if values["currency"] != in_force.currency and effective_from.day != 1:
        raise ServiceError(
            "The currency can change only from the first day of a month.",
            code="currency_change_mid_month",
            details={"effective_from": effective_from.isoformat()},
        )
    row, _ = PlanPrice.objects.update_or_create(plan=locked, effective_from=effective_from, defaults=values)
    if effective_from <= today:
        for field, value in values.items():
            setattr(locked, field, value)
            setattr(plan, field, value)
        locked.save(update_fields=list(PRICE_FIELDS))
    _audit_plan(
        locked,
        action="plan.prices",
        details={
            "effective_from": effective_from.isoformat(),
            "prices": {f: str(v) for f, v in values.items()},
            "previous": {f: str(getattr(in_force, f)) for f in PRICE_FIELDS},
        },
    )
    return row


def _user_for_email(email: str) -> User:
    email = User.objects.normalize_email(email.strip()).lower()
    if "@" not in email:
        raise ServiceError("That is not an email address.", code="invalid_email", details={"email": email})
    user = User.objects.filter(email=email).first()
    return user or User.objects.create_user(email=email)


def _require_can_grant(*, acting_role: str, role: str) -> None:
    """Nobody grants a role above their own; only owners make owners."""
    if ROLE_RANK[Role(role)] > ROLE_RANK[Role(acting_role)]:
        raise ForbiddenError(f"A {acting_role} cannot grant the {role} role.", code="role_too_high")


# --- API keys ----------------------------------------------------------------


@transaction.atomic
def create_api_key(
    *,
    tenant: Tenant,
    name: str,
    scopes: list[str],
    role: str,
    acting_role: str,
    acting_scopes: set[str] | None = None,
    acting_expires_at: datetime | None = None,
    created_by: User | None = None,
    expires_at: datetime | None = None,
    parent: ApiKey | None = None,
) -> CreatedKey:
    """Make a key for ``tenant``; the secret is returned once and never stored.

    ``created_by`` is the person who made it, ``parent`` the key that made it: either bounds the new key's
    rights on every use (never above what its maker holds then), and revoking ``parent`` revokes it too.
    A key made by another key lives no longer than its maker.
    """
    unknown = sorted(set(scopes) - set(Scope.values))
    if unknown or not scopes:
        raise ServiceError(
            "Scopes must be a non-empty list of read, write, predict.",
            code="invalid_scopes",
            details={"unknown": unknown},
        )
    if acting_scopes is not None and not set(scopes) <= acting_scopes:
        raise ForbiddenError("A key cannot be given scopes its creator lacks.", code="scope_too_wide")
    _require_can_grant(acting_role=acting_role, role=role)
    if expires_at is not None and expires_at <= timezone.now():
        raise ServiceError("expires_at must be in the future.", code="invalid_expiry")
    if acting_expires_at is not None:
        if expires_at is not None and expires_at > acting_expires_at:
            raise ForbiddenError("A key cannot outlive the key that creates it.", code="expiry_too_late")
        expires_at = expires_at or acting_expires_at
    if parent is not None and selectors.key_depth(key=parent) >= keys.MAX_KEY_DEPTH:
        raise ForbiddenError(
            f"Keys can be made by keys at most {keys.MAX_KEY_DEPTH} deep; ask a person to make this key.",
            code="key_chain_too_deep",
        )
    new = keys.generate_key()
    api_key = ApiKey.objects.create(
        tenant=tenant,
        name=name.strip() or "key",
        prefix=new.prefix,
        key_hash=new.digest,
        scopes=sorted(set(scopes)),
        role=role,
        created_by=created_by,
        parent=parent,
        expires_at=expires_at,
    )
    details = {"name": api_key.name, "prefix": api_key.prefix, "scopes": api_key.scopes, "role": role}
    if parent is not None:
        details["parent"] = parent.prefix
    audit.record(tenant=tenant, action="api_key.create", target=api_key, details=details)
    return CreatedKey(api_key=api_key, raw_key=new.raw)


@transaction.atomic
def revoke_api_key(*, tenant: Tenant, key_id, acting_role: str = Role.OWNER) -> ApiKey:
    """Revoke a key and, in the same transaction, every key it made (children, grandchildren, ...)."""
    api_key = ApiKey.objects.for_tenant(tenant).select_for_update().filter(pk=key_id).first()
    if api_key is None:
        raise NotFoundError("No such API key.")
    if ROLE_RANK[Role(api_key.role)] > ROLE_RANK[Role(acting_role)]:
        raise ForbiddenError(f"A {acting_role} cannot revoke an {api_key.role}'s key.", code="role_too_high")
    now = timezone.now()
    if api_key.revoked_at is None:
        api_key.revoked_at = now
        api_key.save(update_fields=["revoked_at"])
        audit.record(tenant=tenant, action="api_key.revoke", target=api_key, details={"prefix": api_key.prefix})
    _revoke_tree(tenant=tenant, roots=[api_key], now=now)
    return api_key


def _revoke_tree(*, tenant: Tenant, roots: list[ApiKey], now: datetime, cause: dict | None = None) -> list[ApiKey]:
    """Revoke the keys ``roots`` made, at any depth; one audit row each naming the key it cascaded from.

    ``cause`` goes into the roots' own rows when they are revoked here too (a member's removal).
    Keys already revoked are walked through, so a tree left half-revoked by older code is finished.
    """
    revoked: list[ApiKey] = []

    def revoke(key: ApiKey, because: dict) -> None:
        if key.revoked_at is None:
            key.revoked_at = now
            key.save(update_fields=["revoked_at"])
            audit.record(tenant=tenant, action="api_key.revoke", target=key, details={"prefix": key.prefix, **because})
            revoked.append(key)

    for root in roots:
        revoke(root, cause or {})
    for child, parent in selectors.key_tree(tenant=tenant, roots=roots):
        revoke(child, {"cascade_from": {"api_key": parent.prefix}})
    return revoked


def use_api_key(*, raw_key: str) -> ApiKey | None:
    """The key row for a presented secret (None when unknown), with ``.rights``: what it may do right now.

    The one lookup for both front doors, the API's authentication and the serving process. ``rights`` is
    the key's own role and scopes narrowed by its creator's current membership and its parent keys (see
    ``tenants.keys.narrow``); when ``rights.usable`` is False the key acts with nothing. Use is recorded
    only for a usable key.
    """
    api_key = selectors.api_key_for_secret(raw_key=raw_key)
    if api_key is None:
        return None
    api_key.rights = selectors.key_rights(key=api_key)
    if api_key.rights.usable:
        touch_api_key(api_key=api_key)
    return api_key


def touch_api_key(*, api_key: ApiKey) -> None:
    """Record use, at most once a minute per key so reads stay cheap."""
    now = timezone.now()
    if api_key.last_used_at and now - api_key.last_used_at < LAST_USED_RESOLUTION:
        return
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    api_key.last_used_at = now


# --- Members -----------------------------------------------------------------


@transaction.atomic
def add_member(*, tenant: Tenant, email: str, role: str, acting_role: str) -> Membership:
    """Add a person by email (an account without a password is made if needed)."""
    _require_can_grant(acting_role=acting_role, role=role)
    user = _user_for_email(email)
    if Membership.objects.for_tenant(tenant).filter(user=user).exists():
        raise ConflictError(f"{user.email} is already a member.", code="already_member")
    membership = Membership.objects.create(tenant=tenant, user=user, role=role)
    audit.record(tenant=tenant, action="member.add", target=membership, details={"email": user.email, "role": role})
    return membership


def _member(tenant: Tenant, membership_id) -> Membership:
    membership = Membership.objects.for_tenant(tenant).select_related("user").filter(pk=membership_id).first()
    if membership is None:
        raise NotFoundError("No such member.")
    return membership


def _require_may_manage(*, membership: Membership, acting_role: str) -> None:
    if ROLE_RANK[Role(membership.role)] > ROLE_RANK[Role(acting_role)]:
        raise ForbiddenError(f"A {acting_role} cannot change a {membership.role}.", code="role_too_high")


@transaction.atomic
def change_member_role(*, tenant: Tenant, membership_id, role: str, acting_role: str) -> Membership:
    membership = _member(tenant, membership_id)
    _require_may_manage(membership=membership, acting_role=acting_role)
    _require_can_grant(acting_role=acting_role, role=role)
    if membership.role == Role.OWNER and role != Role.OWNER:
        _require_another_owner(tenant)
    previous = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    details = {"email": membership.user.email, "role": role, "previous": previous}
    if ROLE_RANK[Role(role)] < ROLE_RANK[Role(previous)]:
        # Their keys (and the keys those made) are read through key_rights on every use, so they act with
        # the new role at once; the stored role stays, and a later promotion gives the keys back their own.
        details["api_keys_capped"] = [
            key.prefix
            for key in _live_keys_made_by(tenant=tenant, user=membership.user)
            if ROLE_RANK[Role(key.role)] > ROLE_RANK[Role(role)] or not set(key.scopes) <= ROLE_SCOPES[Role(role)]
        ]
    audit.record(tenant=tenant, action="member.role", target=membership, details=details)
    return membership


@transaction.atomic
def set_user_active(*, user: User, active: bool) -> User:
    """Let a person sign in (and their keys act) again, or stop them everywhere at once.

    A deactivated person's keys act with nothing (``selectors.key_rights`` reads only active members), so the
    change is audited in every tenant they belong to, and serving drops those tenants' cached keys.
    """
    if user.is_active == active:
        return user
    user.is_active = active
    user.save(update_fields=["is_active"])
    action = "user.activate" if active else "user.deactivate"
    for membership in Membership.objects.filter(user=user).only("tenant_id", "role"):
        details = {"email": user.email, "role": membership.role}
        audit.record(tenant=membership.tenant_id, action=action, target=user, details=details)
    return user


@transaction.atomic
def remove_member(*, tenant: Tenant, membership_id, acting_role: str) -> None:
    """Remove a person, and revoke in the same transaction the keys they made and the keys those made."""
    membership = _member(tenant, membership_id)
    _require_may_manage(membership=membership, acting_role=acting_role)
    if membership.role == Role.OWNER:
        _require_another_owner(tenant)
    email = membership.user.email
    made = list(ApiKey.objects.for_tenant(tenant).filter(created_by=membership.user))
    audit.record(
        tenant=tenant,
        action="member.remove",
        target=membership,
        details={"email": email, "api_keys_revoked": [key.prefix for key in made if key.revoked_at is None]},
    )
    membership.delete()
    _revoke_tree(tenant=tenant, roots=made, now=timezone.now(), cause={"cascade_from": {"member": email}})


@transaction.atomic
def revoke_keys_made_by(*, user: User) -> int:
    """Revoke, in every tenant, the keys ``user`` made and the keys those made (the person is being deleted)."""
    revoked = 0
    made = ApiKey.objects.filter(created_by=user).select_related("tenant")
    by_tenant: dict[Tenant, list[ApiKey]] = {}
    for key in made:
        by_tenant.setdefault(key.tenant, []).append(key)
    for tenant, roots in by_tenant.items():
        cause = {"cascade_from": {"member": user.email, "reason": "account deleted"}}
        revoked += len(_revoke_tree(tenant=tenant, roots=roots, now=timezone.now(), cause=cause))
    return revoked


def _live_keys_made_by(*, tenant: Tenant, user: User) -> list[ApiKey]:
    """The person's unrevoked keys in ``tenant`` and, at any depth, the unrevoked keys those made."""
    made = list(ApiKey.objects.for_tenant(tenant).filter(created_by=user))
    tree = made + [child for child, _ in selectors.key_tree(tenant=tenant, roots=made)]
    return [key for key in tree if key.revoked_at is None]


def lock_tenant(*, tenant_id) -> Tenant:
    """The tenant (with its plan) read under a lock on its row, until the caller's transaction ends.

    The one way to serialize a tenant's check-then-write races (the last owner, storage and compute
    reservations, dispatch): callers of one tenant take turns, other tenants are not held up. Only the
    tenant's row is locked (``of``), not its plan's, which every tenant on the plan shares. SQLite ignores
    ``FOR UPDATE``; its transactions are IMMEDIATE, so writers take turns there anyway.
    """
    return Tenant.objects.select_for_update(of=("self",)).select_related("plan").get(pk=tenant_id)


def _require_another_owner(tenant: Tenant) -> None:
    lock_tenant(tenant_id=tenant.pk)  # two concurrent demotions cannot both pass the check
    if selectors.owner_count(tenant=tenant) <= 1:
        raise ConflictError("A tenant must keep at least one owner.", code="last_owner")
