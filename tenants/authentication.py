"""``Authorization: Bearer <key>`` authentication for the REST API."""

from __future__ import annotations

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from core import logs, throttle
from tenants import audit, services
from tenants.models import ApiKey

THROTTLE_SCOPE = "api-key"


class ApiKeyPrincipal:
    """``request.user`` for a request authenticated by an API key (not a person)."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None

    def __init__(self, api_key: ApiKey) -> None:
        self.api_key = api_key

    def __str__(self) -> str:
        return audit.Actor.for_api_key(self.api_key).label


class ApiKeyAuthentication(BaseAuthentication):
    keyword = b"bearer"

    def authenticate(self, request):
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword:
            return None
        try:
            return self._check(header)
        except exceptions.AuthenticationFailed:
            # Valid keys always pass (they are far too long to guess); an address that keeps failing gets 429s.
            address = throttle.client_address(request)
            wait = throttle.retry_after(scope=THROTTLE_SCOPE, address=address)
            throttle.record_failure(scope=THROTTLE_SCOPE, address=address)
            if wait is not None:
                detail = "Too many failed API key attempts from this address."
                raise exceptions.Throttled(wait=wait, detail=detail) from None
            raise

    def _check(self, header: list[bytes]):
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Send the header as 'Authorization: Bearer <key>'.", code="invalid_api_key"
            )
        try:
            raw_key = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid API key.", code="invalid_api_key") from None
        api_key = services.use_api_key(raw_key=raw_key)
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid API key.", code="invalid_api_key")
        # Revoked, expired, made by someone no longer a member, or made by a key that can no longer act.
        if not api_key.rights.usable:
            raise exceptions.AuthenticationFailed(api_key.rights.message, code=api_key.rights.refusal)
        logs.set_tenant(api_key.tenant_id)  # the request's log lines name its tenant from here on
        return ApiKeyPrincipal(api_key), api_key

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'
