"""``Idempotency-Key`` for every write of the tenant API, with the semantics payment APIs use.

A client that sends ``Idempotency-Key: <key>`` on a POST, PUT or PATCH and
loses the answer may send the same request again with the same key: it gets
the first answer replayed (same status, body and content type, plus
``Idempotent-Replayed: true``) and nothing is created twice. The answer is
kept per tenant and key for 24 hours. The same key with another request
(method, path or body) is a 422 ``idempotency_key_reused``; a retry while the
first request is still running is a 409 ``idempotency_request_in_progress``.
Answers that invite a retry (409, 429, 5xx) are not kept: the key is released
so the retry runs again.

It lives in :class:`IdempotentWritesMixin`, a base of the tenant-scoped API
view, so every write endpoint has it without opting in. Stored bodies are
encrypted (AES-GCM) with a key derived from ``SECRET_KEY``, the tenant and the
idempotency key, because some answers (a new API key's secret) must never
sit in the database in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import DatabaseError, IntegrityError, transaction
from django.http import HttpResponse
from django.utils import timezone
from rest_framework.request import Request

from core.errors import ConflictError, ServiceError
from tenants.models import IdempotencyRecord, Tenant

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
METHODS = frozenset({"POST", "PUT", "PATCH"})
MAX_KEY_LENGTH = 255
RECORD_TTL = timedelta(hours=24)
# A first request still "running" after this long died without answering (a killed process): its key is released.
STALE_AFTER = timedelta(hours=1)
# Statuses that ask the client to retry; keeping them would replay the refusal to every retry.
RETRYABLE_STATUSES = frozenset({409, 429})
KEY_RE = re.compile(r"^[!-~](?:[ -~]*[!-~])?$")  # printable ASCII, no surrounding spaces
KEY_PATTERN = KEY_RE.pattern


class IdempotencyKeyReused(ServiceError):
    status_code = 422
    code = "idempotency_key_reused"


class _Replay(Exception):
    """Raised from ``initial`` to answer with a stored response instead of running the handler."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__("replay")
        self.response = response


def check_key(raw: str) -> str:
    if not 1 <= len(raw) <= MAX_KEY_LENGTH or not KEY_RE.match(raw):
        raise ServiceError(
            f"{HEADER} is 1 to {MAX_KEY_LENGTH} printable ASCII characters.",
            code="invalid_idempotency_key",
            details={"header": HEADER, "max_length": MAX_KEY_LENGTH},
        )
    return raw


def request_fingerprint(request: Request, *, caller: str) -> str:
    """sha256 of the caller, the method, the path with its query and the body.

    The caller (a key or a person) is part of it: another caller of the same tenant reusing the key and the
    body gets a 422, never the first caller's answer (which may hold a new key's secret, or show what a
    higher role was allowed to do).

    A multipart body is fingerprinted from its parsed fields and each file's sha256 (computed while the file
    was staged, or read back in chunks), never from the raw bytes: a retry carries another random boundary,
    and a large upload must not be held in memory.
    """
    digest = hashlib.sha256(f"{caller}\n{request.method}\n{request.get_full_path()}\n".encode())
    if (request.content_type or "").startswith("multipart/"):
        entries = []
        for name, values in sorted(request.data.lists()):
            for value in values:
                if isinstance(value, UploadedFile):
                    entries.append(["file", name, value.name or "", value.size, _file_sha256(value)])
                else:
                    entries.append(["field", name, str(value)])
        digest.update(json.dumps(entries).encode())
    else:
        digest.update(request.body)  # JSON bodies are bounded by DATA_UPLOAD_MAX_MEMORY_SIZE
    return digest.hexdigest()


def _file_sha256(upload: UploadedFile) -> str:
    known = getattr(upload, "sha256", None)
    if known:
        return known
    digest = hashlib.sha256()
    for chunk in upload.chunks():
        digest.update(chunk)
    upload.seek(0)
    return digest.hexdigest()


def _now() -> datetime:
    return timezone.now()


def _is_running(record: IdempotencyRecord, now: datetime) -> bool:
    return record.response_status is None and record.created_at > now - STALE_AFTER


def _expired(record: IdempotencyRecord, now: datetime) -> bool:
    return record.expires_at <= now or (record.response_status is None and not _is_running(record, now))


def refuse_if_running(*, tenant: Tenant, key: str) -> None:
    """A cheap check before the body is read: a retry of a running request is refused at once (409)."""
    now = _now()
    record = IdempotencyRecord.objects.for_tenant(tenant).filter(key=key).first()
    if record is not None and not _expired(record, now) and _is_running(record, now):
        raise _in_progress()


def _in_progress() -> ConflictError:
    return ConflictError(
        "A request with this Idempotency-Key is still running; retry when it has answered.",
        code="idempotency_request_in_progress",
    )


def claim(*, tenant: Tenant, key: str, fingerprint: str) -> tuple[IdempotencyRecord | None, IdempotencyRecord | None]:
    """(the new in-progress record this request owns, None) or (None, the finished record to replay).

    The unique (tenant, key) constraint decides between concurrent first requests: exactly one inserts.
    """
    for _ in range(3):
        now = _now()
        try:
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(
                    tenant=tenant, key=key, request_fingerprint=fingerprint, created_at=now, expires_at=now + RECORD_TTL
                )
            return record, None
        except IntegrityError:
            existing = IdempotencyRecord.objects.for_tenant(tenant).filter(key=key).first()
        if existing is None:
            continue  # released meanwhile
        if _expired(existing, now):
            IdempotencyRecord.objects.filter(pk=existing.pk, created_at=existing.created_at).delete()
            continue
        if _is_running(existing, now):
            raise _in_progress()
        if not hmac.compare_digest(existing.request_fingerprint, fingerprint):
            raise IdempotencyKeyReused(
                "This Idempotency-Key was used for a different request; use a new key for a new request.",
                details={"header": HEADER},
            )
        return None, existing
    raise _in_progress()


def replay(*, record: IdempotencyRecord, key: str) -> HttpResponse:
    body = _open(bytes(record.response_body or b""), tenant_id=record.tenant_id, key=key)
    if body is None:  # SECRET_KEY changed since: the answer cannot be read back, and must not be re-run
        raise IdempotencyKeyReused("The answer to this Idempotency-Key can no longer be replayed; use a new key.")
    response = HttpResponse(body, status=record.response_status, content_type=record.response_content_type or None)
    response[REPLAYED_HEADER] = "true"
    return response


def finish(*, record: IdempotencyRecord, key: str, response: HttpResponse) -> None:
    """Keep the answer for replays, or release the key when the answer invites a retry."""
    try:
        if response.status_code >= 500 or response.status_code in RETRYABLE_STATUSES or response.streaming:
            IdempotencyRecord.objects.filter(pk=record.pk).delete()
            return
        if hasattr(response, "render") and not getattr(response, "is_rendered", True):
            response.render()
        IdempotencyRecord.objects.filter(pk=record.pk).update(
            response_status=response.status_code,
            response_body=_seal(response.content, tenant_id=record.tenant_id, key=key),
            response_content_type=(response.get("Content-Type") or "")[:100],
        )
    except DatabaseError:
        # The database went away mid-request: the record stays "running" until STALE_AFTER releases it.
        logger.warning("could not finish idempotency record %s", record.pk, exc_info=True)


def purge_expired(*, now: datetime | None = None) -> int:
    """Delete records past their 24 hours (periodic housekeeping; safe to run twice)."""
    deleted, _ = IdempotencyRecord.objects.filter(expires_at__lte=now or _now()).delete()
    return deleted


# --- encryption of stored answers (AES-256-GCM, a key per tenant and idempotency key) ----------------------------

_NONCE_BYTES = 12


def _aead(tenant_id, key: str) -> AESGCM:
    derived = hmac.new(
        settings.SECRET_KEY.encode(), b"idempotency\x00" + str(tenant_id).encode() + b"\x00" + key.encode(), "sha256"
    ).digest()
    return AESGCM(derived)


def _seal(plaintext: bytes, *, tenant_id, key: str) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + _aead(tenant_id, key).encrypt(nonce, plaintext, None)


def _open(sealed: bytes, *, tenant_id, key: str) -> bytes | None:
    """The stored answer, or None when it cannot be authenticated (SECRET_KEY changed, or a tampered row)."""
    try:
        return _aead(tenant_id, key).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], None)
    except (InvalidTag, ValueError):
        return None


# --- the view mixin -----------------------------------------------------------------------------------------------


class IdempotentWritesMixin:
    """Honours ``Idempotency-Key`` on every POST, PUT and PATCH of the view (a base of TenantScopedAPIView).

    The scoped view calls :meth:`begin_idempotent_request` once the caller is known and allowed; views that
    stream their body (uploads) override :meth:`receive_body` to read it under their own limits first.
    """

    _idempotency: tuple[IdempotencyRecord, str] | None = None

    def receive_body(self, request: Request) -> None:
        """Read the body before it is fingerprinted (a hook for views that stage uploads under limits)."""

    def begin_idempotent_request(self, request: Request, *, tenant: Tenant, caller: str) -> None:
        """Claim the request's Idempotency-Key for ``caller`` (``api_key:<id>`` or ``user:<id>``), or replay."""
        raw = request.headers.get(HEADER)
        method = request.method.lower()
        handled = method in self.http_method_names and hasattr(self, method)  # else DRF answers 405 next
        if raw is None or request.method not in METHODS or not handled:
            return
        key = check_key(raw)
        refuse_if_running(tenant=tenant, key=key)
        self.receive_body(request)
        record, finished = claim(tenant=tenant, key=key, fingerprint=request_fingerprint(request, caller=caller))
        if finished is not None:
            raise _Replay(replay(record=finished, key=key))
        self._idempotency = (record, key)

    def handle_exception(self, exc):
        if isinstance(exc, _Replay):
            return exc.response
        return super().handle_exception(exc)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if self._idempotency is not None:
            record, key = self._idempotency
            self._idempotency = None
            finish(record=record, key=key, response=response)
        return response
