"""Short-lived prediction tokens: how the dashboard's "try it" box calls the serving process as a person.

The dashboard mints a token for the signed-in member of a tenant and sends
the prediction to the serving process with it, server to server. The token
is signed with ``SECRET_KEY`` (which both processes share), names the tenant
and the user, and lives ``TOKEN_SECONDS``; the serving process checks the
membership again when it reads the token, so a removed member's token is
refused even before it expires. No API key is created for this.
"""

from __future__ import annotations

from django.core import signing

from serving.selectors import KeyGrant
from tenants.models import ROLE_SCOPES, Membership, Tenant, User

PREFIX = "mlp-session."
SALT = "serving.dashboard-prediction"
TOKEN_SECONDS = 60


def mint(*, tenant: Tenant, user: User) -> str:
    return PREFIX + signing.dumps({"t": str(tenant.pk), "u": user.pk}, salt=SALT)


def is_token(raw: str) -> bool:
    return raw.startswith(PREFIX)


def grant_for_token(*, raw: str) -> KeyGrant | None:
    """The member's grant for a valid, unexpired token; None for anything else."""
    try:
        claims = signing.loads(raw.removeprefix(PREFIX), salt=SALT, max_age=TOKEN_SECONDS)
        tenant_id, user_id = str(claims["t"]), claims["u"]
    except (signing.BadSignature, KeyError, TypeError):
        return None
    membership = (
        Membership.objects.for_tenant(tenant_id)
        .filter(user_id=user_id, user__is_active=True)
        .select_related("tenant", "tenant__plan")
        .first()
    )
    if membership is None:
        return None
    tenant = membership.tenant
    return KeyGrant(
        key_id=f"user:{user_id}",
        tenant_id=str(tenant.pk),
        tenant_slug=tenant.slug,
        tenant_active=tenant.is_active,
        scopes=frozenset(ROLE_SCOPES[membership.role]),
        revoked=False,
        expired=False,
        predictions_per_minute=tenant.plan.predictions_per_minute,
    )
