"""Typed exceptions: every refusal of the API or the serving process is one of these, never a bare HTTP error.

The API answers errors as ``{"error": {"code", "message", "details"}}``; the serving process as ``{"error": "..."}``.
Both become an :class:`APIError` subclass chosen by status, carrying the code, message, details and the request id
(``X-Request-ID``), so a caller can branch on ``exc.code`` and quote ``exc.request_id`` to an operator.
"""

from __future__ import annotations

from typing import Any


class MLPlatformError(Exception):
    """Base of every error the SDK raises."""


class ConfigurationError(MLPlatformError):
    """No API URL or key, an unknown profile, or an unreadable config file."""


class TransportError(MLPlatformError):
    """The server could not be reached (connection refused, timeout) after the retries."""


class APIError(MLPlatformError):
    """A 4xx or 5xx answer. ``code`` is the machine-readable reason; ``details`` what the server added."""

    status: int = 0

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str,
        details: dict[str, Any] | None = None,
        request_id: str | None = None,
        method: str = "",
        url: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details = details or {}
        self.request_id = request_id
        self.method = method
        self.url = url
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" [request {self.request_id}]" if self.request_id else ""
        return f"{self.status} {self.code}: {self.message}{where}"


class BadRequestError(APIError):
    """400: invalid input (``details`` names the fields)."""


class AuthenticationError(APIError):
    """401: missing, invalid, revoked or expired key."""


class PermissionDeniedError(APIError):
    """403: missing scope, too low a role, a suspended tenant or an exceeded quota."""


class NotFoundError(APIError):
    """404: no such object in the caller's tenant (another tenant's ids are not found either)."""


class ConflictError(APIError):
    """409: the object's state refuses the change (an alias still points at a version, an upload not pending...)."""


class PayloadTooLargeError(APIError):
    """413: a body or file over the plan's limit."""


class UnprocessableError(APIError):
    """422: for example an Idempotency-Key reused with another request."""


class RateLimitedError(APIError):
    """429 after the retries: ``retry_after`` says how long the server asked to wait."""


class ServerError(APIError):
    """5xx after the retries (503: the database, storage or serving memory is briefly unavailable)."""


class JobFailedError(MLPlatformError):
    """A followed training job ended ``failed`` or ``cancelled``; ``job`` is its last state."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        reason = job.get("error_code") or job.get("status")
        message = job.get("error_message") or ""
        super().__init__(f"job {job.get('id')} {job.get('status')}: {reason}" + (f" ({message})" if message else ""))


class DatasetInvalidError(MLPlatformError):
    """A dataset waited on ended ``invalid``; ``dataset`` holds its ``errors``."""

    def __init__(self, dataset: dict[str, Any]) -> None:
        self.dataset = dataset
        errors = dataset.get("errors") or []
        first = errors[0] if errors and isinstance(errors, list) else {}
        detail = first.get("message") or first.get("code") or "" if isinstance(first, dict) else str(first)
        super().__init__(f"dataset {dataset.get('id')} is invalid" + (f": {detail}" if detail else ""))


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: UnprocessableError,
    429: RateLimitedError,
}
_DEFAULT_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    409: "conflict",
    413: "payload_too_large",
    422: "unprocessable",
    429: "throttled",
}


def error_class(status: int) -> type[APIError]:
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, APIError)


def from_response(response: Any, *, retry_after: float | None = None) -> APIError:
    """The exception for a failed ``requests.Response``: the API's envelope, serving's string, or the bare status."""
    status = response.status_code
    code = _DEFAULT_CODES.get(status, "server_error" if status >= 500 else "error")
    message = response.reason or f"HTTP {status}"
    details: dict[str, Any] = {}
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):  # the API's envelope
            code = str(error.get("code") or code)
            message = str(error.get("message") or message)
            details = error.get("details") if isinstance(error.get("details"), dict) else {}
        elif isinstance(error, str):  # the serving process
            message = error
    elif response.text and len(response.text) < 500 and "<" not in response.text:
        message = response.text.strip()
    return error_class(status)(
        message,
        status=status,
        code=code,
        details=details,
        request_id=response.headers.get("X-Request-ID"),
        method=response.request.method if response.request is not None else "",
        url=response.url,
        retry_after=retry_after,
    )
