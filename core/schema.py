"""OpenAPI additions: the error envelope, documented on every operation for every 4xx it can answer.

Clients (and the schema-driven fuzz test) can then rely on the schema for
every answer, errors included, not only for the successes.
"""

from __future__ import annotations

from typing import Any

ERROR_STATUSES = {
    "400": "Invalid input (the message and details say which field and why).",
    "401": "Missing, invalid, revoked or expired credentials.",
    "403": "Suspended tenant, missing scope, too low a role, or quota exceeded.",
    "404": "No such object in the caller's tenant (another tenant's ids are not found either).",
    "405": "Method not allowed.",
    "406": "Not acceptable (the API answers JSON).",
    "409": "Conflict with the object's current state.",
    "413": "Body or file too large.",
    "415": "Unsupported media type.",
    "429": "Too many requests (see Retry-After).",
    "503": "The database or object storage is briefly unavailable (see Retry-After); retry.",
}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "object", "additionalProperties": True},
            },
        }
    },
}
METHODS = {"get", "put", "post", "delete", "patch"}


def add_error_responses(result: dict[str, Any], generator, request, public) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: every operation documents the error envelope for each 4xx."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    reference = {"$ref": "#/components/schemas/Error"}
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            if method not in METHODS:
                continue
            responses = operation.setdefault("responses", {})
            for status, description in ERROR_STATUSES.items():
                responses.setdefault(
                    status, {"description": description, "content": {"application/json": {"schema": reference}}}
                )
    return result
