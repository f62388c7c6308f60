"""The audit log: one row for every change a service makes, naming who made it and from which request.

Who is acting travels in one context variable, the only way services learn it: the API sets it for the
request once the caller is resolved (``TenantScopedAPIView``), the dashboard for a page's action, the admin
for an operator's action, and anything else (tasks, commands) acts as ``system``. Services call
:func:`record` next to their write, inside their transaction, so a change and its audit row commit together;
the model registry's own history reads the same actor (:func:`current_actor`).

Actors are written in one format, ``<kind>:<who>``, by the constructors below and nowhere else.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from core.middleware import current_request_id


@dataclass(frozen=True)
class Actor:
    kind: str  # user | api_key | operator | system
    label: str  # "user:<email>", "api_key:<prefix>", "operator:<email>" or "system"; never a secret
    user_id: Any = None
    api_key_id: Any = None

    @classmethod
    def for_api_key(cls, api_key) -> Actor:
        return cls(kind="api_key", label=f"api_key:{api_key.prefix}", api_key_id=api_key.pk)

    @classmethod
    def for_user(cls, user) -> Actor:
        """A tenant's person, through the API with a session or through the dashboard."""
        return cls(kind="user", label=f"user:{user.email}", user_id=user.pk)

    @classmethod
    def for_operator(cls, user) -> Actor:
        """Platform staff in the admin console."""
        return cls(kind="operator", label=f"operator:{user.email}", user_id=user.pk)


SYSTEM = Actor(kind="system", label="system")
_actor: contextvars.ContextVar[Actor] = contextvars.ContextVar("audit_actor", default=SYSTEM)


def current_actor() -> Actor:
    return _actor.get()


def set_actor(actor: Actor) -> contextvars.Token:
    return _actor.set(actor)


def reset_actor(token: contextvars.Token) -> None:
    _actor.reset(token)


@contextlib.contextmanager
def acting_as(actor: Actor) -> Iterator[None]:
    token = _actor.set(actor)
    try:
        yield
    finally:
        _actor.reset(token)


def record(*, tenant, action: str, target, details: dict[str, Any] | None = None):
    """Write the audit row for one change; ``target`` is a model instance or ``(type, id)``."""
    from tenants.models import AuditEvent

    if isinstance(target, tuple):
        target_type, target_id = target
    else:
        target_type, target_id = target._meta.model_name, target.pk
    actor = _actor.get()
    return AuditEvent.objects.create(
        tenant_id=getattr(tenant, "pk", tenant),
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        actor_kind=actor.kind,
        actor_label=actor.label,
        actor_user_id=actor.user_id,
        actor_api_key_id=actor.api_key_id,
        request_id=current_request_id(),
        details=details or {},
    )
