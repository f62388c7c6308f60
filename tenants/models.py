"""Tenants, their people and keys, and the base every tenant-owned model derives from."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import ClassVar

from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models
from django.utils import timezone


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create(self, email: str, password: str | None, **extra):
        if not email:
            raise ValueError("users need an email address")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        if password:
            user.set_password(password)
        else:
            user.set_unusable_password()
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra):
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra):
        extra.update(is_staff=True, is_superuser=True)
        return self._create(email, password, **extra)


class User(AbstractUser):
    """A person: signs in by email; belongs to tenants through memberships."""

    username = None
    email = models.EmailField("email address", unique=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []
    objects = UserManager()

    def __str__(self) -> str:
        return self.email


class Plan(models.Model):
    """What a tenant may use; later issues enforce each limit."""

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=100)
    max_concurrent_jobs = models.PositiveIntegerField(default=2)
    compute_seconds_per_month = models.PositiveBigIntegerField(default=36_000)
    storage_bytes = models.PositiveBigIntegerField(default=10 * 1024**3)
    max_dataset_bytes = models.PositiveBigIntegerField(default=2 * 1024**3)
    predictions_per_minute = models.PositiveIntegerField(default=600)
    # A job's estimated parameter + activation memory may not exceed this (checked at submission).
    max_job_memory_bytes = models.PositiveBigIntegerField(default=2 * 1024**3)
    # Prices (in the plan's currency); amounts are computed with Decimal and rounded to cents.
    currency = models.CharField(max_length=3, default="USD")
    monthly_base_fee = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0.00"))
    price_gpu_hour = models.DecimalField(max_digits=12, decimal_places=4, default=Decimal("2.5000"))
    price_cpu_hour = models.DecimalField(max_digits=12, decimal_places=4, default=Decimal("0.0800"))
    price_gb_month = models.DecimalField(max_digits=12, decimal_places=4, default=Decimal("0.0230"))
    price_per_1k_predictions = models.DecimalField(max_digits=12, decimal_places=4, default=Decimal("0.0500"))
    # An explanation (integrated gradients: about 50 model calls, on TensorFlow) costs about 50 predictions.
    price_per_1k_explanations = models.DecimalField(max_digits=12, decimal_places=4, default=Decimal("2.5000"))

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name


# A plan's name and limits: what ``services.update_plan`` changes and the API shows (prices are apart).
PLAN_FIELDS = (
    "slug",
    "name",
    "max_concurrent_jobs",
    "compute_seconds_per_month",
    "storage_bytes",
    "max_dataset_bytes",
    "predictions_per_minute",
    "max_job_memory_bytes",
)
# A plan's prices: what ``services.set_plan_prices`` changes, kept per day in ``PlanPrice`` for billing.
PRICE_FIELDS = (
    "currency",
    "monthly_base_fee",
    "price_gpu_hour",
    "price_cpu_hour",
    "price_gb_month",
    "price_per_1k_predictions",
    "price_per_1k_explanations",
)


class PlanPrice(models.Model):
    """A plan's prices from ``effective_from`` (a day) until the next row: a past month is billed at its own prices.

    The price fields on ``Plan`` are the current prices; every change to them appends a row here.
    """

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="price_history")
    effective_from = models.DateField(db_index=True)
    currency = models.CharField(max_length=3, default="USD")
    monthly_base_fee = models.DecimalField(max_digits=12, decimal_places=2)
    price_gpu_hour = models.DecimalField(max_digits=12, decimal_places=4)
    price_cpu_hour = models.DecimalField(max_digits=12, decimal_places=4)
    price_gb_month = models.DecimalField(max_digits=12, decimal_places=4)
    price_per_1k_predictions = models.DecimalField(max_digits=12, decimal_places=4)
    price_per_1k_explanations = models.DecimalField(max_digits=12, decimal_places=4)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["plan", "-effective_from"]
        constraints = [models.UniqueConstraint(fields=["plan", "effective_from"], name="one_price_per_plan_and_day")]

    def __str__(self) -> str:
        return f"{self.plan} from {self.effective_from}"


class Tenant(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=63, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE, db_index=True)
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="tenants")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class TenantScopedQuerySet(models.QuerySet):
    def for_tenant(self, tenant: Tenant | uuid.UUID | str) -> TenantScopedQuerySet:
        """This tenant's rows only (a Tenant or its id: the serving process knows tenants by id)."""
        return self.filter(tenant=tenant)


class TenantOwnedModel(models.Model):
    """Base of every row that belongs to a tenant: a non-null, indexed ``tenant`` key.

    Read these rows through ``Model.objects.for_tenant(tenant)``; the API's
    scoped base view does so for every endpoint.

    A row that holds objects in storage says so with ``STORED_BYTES``: the name of its size field and the
    filter of the rows whose objects are stored now. ``tenants.selectors.storage_bytes_used`` sums every such
    model, so the storage quota and the bill count the same bytes, and an app added later counts by declaring it.
    """

    STORED_BYTES: ClassVar[tuple[str, models.Q] | None] = None

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, db_index=True, related_name="%(app_label)s_%(class)s_set"
    )

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        abstract = True


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


# Higher rank may do everything a lower rank may.
ROLE_RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


class Membership(TenantOwnedModel):
    """A user's role in one tenant."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["created_at"]
        constraints = [models.UniqueConstraint(fields=["tenant", "user"], name="one_membership_per_user_and_tenant")]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} ({self.role})"


class Scope(models.TextChoices):
    READ = "read", "Read"
    WRITE = "write", "Write"
    PREDICT = "predict", "Predict"


# The scopes a person of each role acts with (a session, or a key whose rights are capped by its creator's role).
ROLE_SCOPES = {
    Role.VIEWER: frozenset({Scope.READ}),
    Role.MEMBER: frozenset({Scope.READ, Scope.WRITE, Scope.PREDICT}),
    Role.ADMIN: frozenset({Scope.READ, Scope.WRITE, Scope.PREDICT}),
    Role.OWNER: frozenset({Scope.READ, Scope.WRITE, Scope.PREDICT}),
}


class ApiKey(TenantOwnedModel):
    """A tenant's API key: only its SHA-256 is stored; the secret is shown once.

    The key acts with ``role`` (never above its creator's role when a person
    made it) and only for its ``scopes``.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # The key that made this key (None when a person made it in a session): a key never outlives its parent.
    # RESTRICT: deleting a parent row (not its whole tenant) must not turn its children into keys no one made.
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.RESTRICT, related_name="children")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def is_usable(self, now=None) -> bool:
        now = now or timezone.now()
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now


class AuditEvent(TenantOwnedModel):
    """Who changed what, when, from which request. Written by services; never edited or deleted."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    action = models.CharField(max_length=64, db_index=True)  # e.g. "dataset.create", "model.alias_set"
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=100)
    actor_kind = models.CharField(max_length=16)
    actor_label = models.CharField(max_length=300)  # "<kind>:" and an email of up to 254 characters
    actor_user = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    request_id = models.CharField(max_length=64, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return (
            f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action} {self.target_type}:{self.target_id}"
        )

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise TypeError("Audit events are never changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("Audit events are never deleted (they go only with their tenant).")


class TenantPlanPeriod(TenantOwnedModel):
    """The plan a tenant is on from ``effective_from`` (a day) until its next row: each day of a past month is
    billed on the plan the tenant had that day, not the plan it has now. Appended by ``set_tenant_plan``."""

    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="+")
    effective_from = models.DateField()
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["tenant", "-effective_from"]
        constraints = [models.UniqueConstraint(fields=["tenant", "effective_from"], name="one_plan_per_tenant_and_day")]

    def __str__(self) -> str:
        return f"{self.tenant_id} on {self.plan_id} from {self.effective_from}"


class IdempotencyRecord(TenantOwnedModel):
    """The first answer to a POST sent with an ``Idempotency-Key``, replayed to retries for 24 hours.

    ``request_fingerprint`` is the sha256 of the caller, method, path and body: the same key with another caller
    or body is a 422.
    While ``response_status`` is None the first request is still running (a retry then gets 409).
    """

    id = models.BigAutoField(primary_key=True)
    key = models.CharField(max_length=255)
    request_fingerprint = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.BinaryField(null=True, blank=True)
    response_content_type = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "key"], name="one_idempotency_record_per_key")]

    def __str__(self) -> str:
        return f"{self.key} ({self.response_status or 'in progress'})"
