"""Tenant scoping for the REST API, enforced in one place.

Every tenant API view derives from :class:`TenantScopedAPIView` (or the
viewset built on it). The caller's tenant, role and scopes are resolved once
per request from the credentials; the role and scope rules are checked
before the handler runs; and viewsets get their rows only through
``scoped_model.objects.for_tenant(...)``. Subclasses cannot override
``get_queryset``; the reviewed escape hatch is ``dangerously_get_queryset``.
Another tenant's object is simply not in the queryset, so it answers 404,
exactly like a missing one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import QuerySet
from rest_framework import viewsets
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.views import APIView

from core import logs
from core.errors import ForbiddenError
from tenants import audit, selectors
from tenants.idempotency import IdempotentWritesMixin
from tenants.models import ROLE_RANK, ROLE_SCOPES, ApiKey, Membership, Role, Scope, Tenant, TenantOwnedModel, User
from tenants.schema import TenantAutoSchema

TENANT_HEADER = "X-Tenant"
SESSION_TENANT_KEY = "tenant_id"


@dataclass(frozen=True)
class Caller:
    """Who is calling, for which tenant, with what rights."""

    tenant: Tenant
    role: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    user: User | None = None
    api_key: ApiKey | None = None

    @property
    def identity(self) -> str:
        """The key or person calling: what an Idempotency-Key's stored answer belongs to."""
        return f"api_key:{self.api_key.pk}" if self.api_key is not None else f"user:{getattr(self.user, 'pk', None)}"

    def has_role(self, minimum: str) -> bool:
        return ROLE_RANK[Role(self.role)] >= ROLE_RANK[Role(minimum)]

    def audit_actor(self) -> audit.Actor:
        return audit.Actor.for_api_key(self.api_key) if self.api_key is not None else audit.Actor.for_user(self.user)


def caller_for_membership(membership: Membership) -> Caller:
    """A person acting in one tenant with their membership's role (the API's session callers and the dashboard)."""
    return Caller(
        tenant=membership.tenant,
        role=membership.role,
        scopes=frozenset(ROLE_SCOPES[Role(membership.role)]),
        user=membership.user,
    )


def resolve_caller(request: Request) -> Caller:
    """The caller of an authenticated request; raises 403/404 envelopes otherwise."""
    if isinstance(request.auth, ApiKey):
        key = request.auth
        # The key's rights now: never above its creator's current role or its parent key's rights.
        rights = getattr(key, "rights", None) or selectors.key_rights(key=key)
        if not rights.usable:
            raise AuthenticationFailed(rights.message, code=rights.refusal)
        caller = Caller(tenant=key.tenant, role=rights.role, scopes=rights.scopes, api_key=key)
    else:
        hint = request.headers.get(TENANT_HEADER) or request.session.get(SESSION_TENANT_KEY)
        membership = selectors.membership_in(user=request.user, tenant_hint=hint)
        if membership is None:
            raise ForbiddenError(
                f"Choose a tenant you belong to with the {TENANT_HEADER} header.", code="tenant_required"
            )
        caller = caller_for_membership(membership)
    logs.set_tenant(caller.tenant.id)  # every log line of the rest of this request names the tenant
    if not caller.tenant.is_active:
        raise ForbiddenError("This tenant is suspended.", code="tenant_suspended")
    return caller


class TenantScopedAPIView(IdempotentWritesMixin, APIView):
    """Base of every tenant API view: resolves the caller and checks scope and role.

    ``read_scope``/``write_scope`` name the key scope needed for safe and
    unsafe methods; ``read_role``/``write_role`` the least member role.
    """

    read_scope: str = Scope.READ
    write_scope: str = Scope.WRITE
    read_role: str = Role.VIEWER
    write_role: str = Role.MEMBER
    schema = TenantAutoSchema()  # documents the Idempotency-Key header on every write

    caller: Caller

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)  # authentication, permissions, throttles
        self.caller = resolve_caller(request)
        self._audit_token = audit.set_actor(self.caller.audit_actor())
        safe = request.method in SAFE_METHODS
        scope = self.read_scope if safe else self.write_scope
        if scope not in self.caller.scopes:
            raise ForbiddenError(f"This key lacks the {scope!r} scope.", code="missing_scope")
        role = self.read_role if safe else self.write_role
        if not self.caller.has_role(role):
            raise ForbiddenError(f"This needs the {role} role or higher.", code="role_required")
        # Last: a caller refused above never claims an Idempotency-Key (tenants/idempotency.py).
        self.begin_idempotent_request(request, tenant=self.caller.tenant, caller=self.caller.identity)

    def finalize_response(self, request, response, *args, **kwargs):
        token = getattr(self, "_audit_token", None)
        if token is not None:
            audit.reset_actor(token)
            self._audit_token = None
        return super().finalize_response(request, response, *args, **kwargs)


class TenantScopedViewSet(TenantScopedAPIView, viewsets.GenericViewSet):
    """A viewset whose rows are always the caller's tenant's rows of ``scoped_model``.

    Customise with ``refine_queryset`` (filters, joins), never ``get_queryset``.
    """

    scoped_model: type[TenantOwnedModel]

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "get_queryset" in cls.__dict__:
            raise TypeError(
                f"{cls.__name__} overrides get_queryset: use refine_queryset, or dangerously_get_queryset "
                "for a reviewed exception to tenant scoping."
            )

    def get_queryset(self) -> QuerySet:
        dangerous = getattr(self, "dangerously_get_queryset", None)
        if dangerous is not None:
            return dangerous()
        if getattr(self, "swagger_fake_view", False):  # schema generation has no caller
            return self.scoped_model.objects.none()
        return self.refine_queryset(self.scoped_model.objects.for_tenant(self.caller.tenant))

    def refine_queryset(self, queryset: QuerySet) -> QuerySet:
        return queryset
