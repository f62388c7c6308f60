"""OpenAPI additions of the tenant API: API-key authentication (loaded by TenantsConfig.ready) and the
``Idempotency-Key`` header that every write of a tenant-scoped view honours (tenants/idempotency.py)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter

from tenants import idempotency


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A tenant API key: `Authorization: Bearer mlp_<prefix>_<secret>`.",
        }


IDEMPOTENCY_KEY_PARAMETER = OpenApiParameter(
    name=idempotency.HEADER,
    type={
        "type": "string",
        "minLength": 1,
        "maxLength": idempotency.MAX_KEY_LENGTH,
        "pattern": idempotency.KEY_PATTERN,
    },
    location=OpenApiParameter.HEADER,
    required=False,
    description=(
        "Makes a retry safe: the first answer to a request with this key is kept for 24 hours (per tenant) and "
        f"replayed, with `{idempotency.REPLAYED_HEADER}: true`, to a retry with the same method, path and body. "
        "The same key with another request is a 422 `idempotency_key_reused`; a retry while the first request "
        "is still running is a 409 `idempotency_request_in_progress`. 409, 429 and 5xx answers are not kept. "
        f"1 to {idempotency.MAX_KEY_LENGTH} printable ASCII characters, e.g. a UUID."
    ),
)
_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}  # added by core.schema's hook
IDEMPOTENCY_RESPONSES = {
    "409": "Conflict with the object's current state, or `idempotency_request_in_progress`: a request with this "
    "Idempotency-Key is still running.",
    "422": "`idempotency_key_reused`: this Idempotency-Key was used for a different request.",
}


class TenantAutoSchema(AutoSchema):
    """The schema of a tenant-scoped view: its writes document the Idempotency-Key header and its answers."""

    def get_override_parameters(self):
        parameters = list(super().get_override_parameters())
        if self.method in idempotency.METHODS:
            parameters.append(IDEMPOTENCY_KEY_PARAMETER)
        return parameters

    def get_operation(self, *args, **kwargs):
        operation = super().get_operation(*args, **kwargs)
        if operation is None or self.method not in idempotency.METHODS:
            return operation
        responses = operation.setdefault("responses", {})
        for status, response in responses.items():
            if status.startswith("2"):
                response.setdefault("headers", {})[idempotency.REPLAYED_HEADER] = {
                    "schema": {"type": "string", "enum": ["true"]},
                    "description": "Present when this is the stored answer to an earlier request with the same "
                    "Idempotency-Key.",
                }
        for status, description in IDEMPOTENCY_RESPONSES.items():
            responses[status] = {"description": description, "content": _ERROR}
        return operation
