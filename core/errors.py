"""The one error envelope of the REST API.

Every 4xx/5xx answer has the body
``{"error": {"code": "...", "message": "...", "details": {...}}}``.
Services raise :class:`ServiceError` (no HTTP knowledge needed beyond a
status); DRF and Django exceptions are mapped here too.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError as DatabaseInterfaceError
from django.db import OperationalError as DatabaseOperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """A business rule refused the request; carries what the client is told."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status_code:
            self.status_code = status_code
        self.details = details or {}


class NotFoundError(ServiceError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class ConflictError(ServiceError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class ForbiddenError(ServiceError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "forbidden"


class QuotaExceededError(ServiceError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "quota_exceeded"


class PayloadTooLargeError(ServiceError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    code = "payload_too_large"


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _validation_message(detail: Any) -> str:
    """One readable sentence from DRF's nested validation detail."""
    if isinstance(detail, dict):
        for field, value in detail.items():
            inner = _validation_message(value)
            return inner if field == "non_field_errors" else f"{field}: {inner}"
    if isinstance(detail, list) and detail:
        return _validation_message(detail[0])
    return str(detail) or "Invalid input."


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF ``EXCEPTION_HANDLER``: every error becomes the envelope."""
    if isinstance(exc, ServiceError):
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.status_code)
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(
            error_body("payload_too_large", f"The request body is over the {limit}-byte limit.", {"limit": limit}),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, SuspiciousOperation):
        return Response(error_body("bad_request", "The request was refused as malformed."), status=400)
    if isinstance(exc, DatabaseOperationalError | DatabaseInterfaceError):
        # The database connection was lost (a restart, a failover, terminated backends): a retryable 503, and the
        # next request opens a new connection.
        logger.warning("database unavailable during %s: %s", context.get("request") and context["request"].path, exc)
        return Response(
            error_body("database_unavailable", "The database is briefly unavailable; retry shortly."),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "2"},
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)

    if _storage_unavailable(exc):
        logger.warning("object storage unavailable: %s", exc)
        return Response(
            error_body("storage_unavailable", "Object storage is briefly unavailable; retry shortly."),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )

    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("Unhandled error in API view", exc_info=exc)
        return Response(
            error_body("server_error", "An internal error occurred; it has been logged."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    if isinstance(exc, exceptions.ValidationError):
        details = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = error_body("validation_error", _validation_message(exc.detail), details)
    else:
        detail = getattr(exc, "detail", "")
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        details: dict[str, Any] = {}
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            details["retry_after_seconds"] = int(exc.wait)
        response.data = error_body(str(code), str(detail), details)
    return response


def _storage_unavailable(exc: Exception) -> bool:
    """S3 could not be reached or answered 5xx (after boto's own retries): retryable, not a bug of ours."""
    from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

    if isinstance(exc, EndpointConnectionError | ConnectionClosedError | ReadTimeoutError):
        return True
    return isinstance(exc, ClientError) and exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500


def _json_error(request, status_code: int, code: str, message: str):
    return JsonResponse(error_body(code, message), status=status_code)


def handler404(request, exception=None):
    """Django-level 404 (no URL matched): JSON envelope for API paths."""
    if _is_api_path(request.path):
        return _json_error(request, 404, "not_found", "No such resource.")
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def handler500(request):
    if _is_api_path(request.path):
        return _json_error(request, 500, "server_error", "An internal error occurred; it has been logged.")
    from django.views.defaults import server_error

    return server_error(request)


def handler400(request, exception=None):
    if _is_api_path(request.path):
        return _json_error(request, 400, "bad_request", "The request could not be understood.")
    from django.views.defaults import bad_request

    return bad_request(request, exception)


def handler403(request, exception=None):
    if _is_api_path(request.path):
        return _json_error(request, 403, "permission_denied", "You do not have permission to do this.")
    from django.views.defaults import permission_denied

    return permission_denied(request, exception)


def _is_api_path(path: str) -> bool:
    return path.startswith(("/api/", "/healthz", "/readyz"))
