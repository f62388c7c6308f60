"""Writes for tenants, members and API keys. Views, commands and the admin call these."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone
from django.utils.text import slugify

from core.errors import ConflictError, ForbiddenError, NotFoundError, ServiceError
from tenants import audit, keys, selectors
from tenants.models import ROLE_RANK, ApiKey, Membership, Plan, Role, Scope, Tenant, UsageRecord, User

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
    *, name: str, owner_email: str, slug: str | None = None, plan: Plan | None = None, key_name: str = "initial"
) -> tuple[Tenant, CreatedKey]:
    """Create a tenant with its owner and a first all-scope owner key."""
    name = name.strip()
    if not name:
        raise ServiceError("A tenant needs a name.", code="invalid_name")
    if slug and Tenant.objects.filter(slug=slug).exists():
        raise ConflictError(f"A tenant with slug {slug!r} already exists.", code="slug_taken")
    tenant = Tenant.objects.create(name=name, slug=slug or _unique_slug(name), plan=plan or default_plan())
    owner = _user_for_email(owner_email)
    Membership.objects.create(tenant=tenant, user=owner, role=Role.OWNER)
    audit.record(tenant=tenant, action="tenant.create", target=tenant, details={"owner": owner.email})
    created = create_api_key(
        tenant=tenant, name=key_name, scopes=[s.value for s in Scope], role=Role.OWNER, acting_role=Role.OWNER
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
) -> CreatedKey:
    """Make a key for ``tenant``; the secret is returned once and never stored.

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
    new = keys.generate_key()
    api_key = ApiKey.objects.create(
        tenant=tenant,
        name=name.strip() or "key",
        prefix=new.prefix,
        key_hash=new.digest,
        scopes=sorted(set(scopes)),
        role=role,
        created_by=created_by,
        expires_at=expires_at,
    )
    audit.record(
        tenant=tenant,
        action="api_key.create",
        target=api_key,
        details={"name": api_key.name, "prefix": api_key.prefix, "scopes": api_key.scopes, "role": role},
    )
    return CreatedKey(api_key=api_key, raw_key=new.raw)


@transaction.atomic
def revoke_api_key(*, tenant: Tenant, key_id, acting_role: str = Role.OWNER) -> ApiKey:
    api_key = ApiKey.objects.for_tenant(tenant).filter(pk=key_id).first()
    if api_key is None:
        raise NotFoundError("No such API key.")
    if ROLE_RANK[Role(api_key.role)] > ROLE_RANK[Role(acting_role)]:
        raise ForbiddenError(f"A {acting_role} cannot revoke an {api_key.role}'s key.", code="role_too_high")
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
        audit.record(tenant=tenant, action="api_key.revoke", target=api_key, details={"prefix": api_key.prefix})
    return api_key


def use_api_key(*, raw_key: str) -> ApiKey | None:
    """The key row for a presented secret (None when unknown), its use recorded when it is usable.

    The one lookup for both front doors: the API's authentication and the serving process.
    """
    api_key = selectors.api_key_for_secret(raw_key=raw_key)
    if api_key is not None and api_key.is_usable():
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
    audit.record(
        tenant=tenant,
        action="member.role",
        target=membership,
        details={"email": membership.user.email, "role": role, "previous": previous},
    )
    return membership


@transaction.atomic
def remove_member(*, tenant: Tenant, membership_id, acting_role: str) -> None:
    membership = _member(tenant, membership_id)
    _require_may_manage(membership=membership, acting_role=acting_role)
    if membership.role == Role.OWNER:
        _require_another_owner(tenant)
    audit.record(tenant=tenant, action="member.remove", target=membership, details={"email": membership.user.email})
    membership.delete()


def _require_another_owner(tenant: Tenant) -> None:
    # Lock the tenant row so two concurrent demotions cannot both pass the check.
    Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
    if selectors.owner_count(tenant=tenant) <= 1:
        raise ConflictError("A tenant must keep at least one owner.", code="last_owner")


# --- Usage --------------------------------------------------------------------


def aggregate_usage(*, day: date, tenant: Tenant | None = None) -> int:
    """Rebuild the day's usage records (every tenant, or one) from jobs, storage and metered predictions.

    Idempotent: the day's rows are replaced in one transaction, so the
    periodic task can run it as often as it likes. Compute is counted on
    the day a job finished (an unfinished job's seconds count when it
    ends); storage is the bytes stored when the aggregation runs, times one
    day; predictions are the serving process's hourly meters summed per day.
    """
    from serving.models import ModelVersion, PredictionUsage
    from training import selectors as training_selectors
    from training.models import TrainingJob

    start = datetime.combine(day, time.min, tzinfo=UTC)
    end = start + timedelta(days=1)
    tenants = [tenant] if tenant is not None else list(Tenant.objects.all())
    written = 0
    for current in tenants:
        rows: list[UsageRecord] = []
        jobs = TrainingJob.objects.for_tenant(current).filter(finished_at__gte=start, finished_at__lt=end)
        for device, seconds in jobs.values_list("device").annotate(total=Sum("compute_seconds")):
            kind = UsageRecord.Kind.GPU_SECONDS if device == "gpu" else UsageRecord.Kind.CPU_SECONDS
            rows.append(UsageRecord(tenant=current, day=day, kind=kind, quantity=Decimal(str(round(seconds, 3)))))
        stored = training_selectors.storage_bytes_used(tenant=current) + (
            ModelVersion.objects.for_tenant(current).aggregate(t=Sum("size_bytes"))["t"] or 0
        )
        if stored:
            rows.append(UsageRecord(tenant=current, day=day, kind=UsageRecord.Kind.STORAGE_BYTE_DAYS, quantity=stored))
        predictions = (
            PredictionUsage.objects.for_tenant(current)
            .filter(period_start__gte=start, period_start__lt=end)
            .values_list("model_name", "version")
            .annotate(total=Sum("predictions"))
        )
        for model_name, version, count in predictions:
            if count:
                rows.append(
                    UsageRecord(
                        tenant=current,
                        day=day,
                        kind=UsageRecord.Kind.PREDICTIONS,
                        model_name=model_name,
                        version=version,
                        quantity=count,
                    )
                )
        with transaction.atomic():
            UsageRecord.objects.for_tenant(current).filter(day=day).delete()
            UsageRecord.objects.bulk_create(rows)
        written += len(rows)
    return written
