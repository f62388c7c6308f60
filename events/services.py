"""Writes for webhooks: endpoints, emitting events, and delivering them (one attempt at a time).

Emitters in later apps (training, serving, usage) call :func:`emit` inside their own transaction: the event and
one delivery per subscribed endpoint commit with the change they describe, and the delivery task is sent by
name once they have (``core.queue``). The task calls :func:`attempt_delivery`, which claims the delivery, makes
one HTTP attempt through ``events.network`` and records it; retries follow an exponential backoff with jitter.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core import queue
from core.errors import ConflictError, NotFoundError, ServiceError
from events import network, sealing, signing
from events.models import (
    EVENT_TYPES,
    PING,
    DeliveryAttempt,
    QuotaAlert,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from tenants import audit
from tenants import services as tenant_services
from tenants.models import Tenant

logger = logging.getLogger(__name__)
# Tasks are sent by name: ``events.tasks`` imports this module, never the reverse.
DELIVER = "events.tasks.deliver"
Status = WebhookDelivery.Status
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
ROTATION_OVERLAP = timedelta(hours=24)
PENDING_PER_ENDPOINT_FOR_REQUESTS = 20  # pings and redeliveries refused (429) while this many wait
# A claimed attempt's hold: longer than the delivery task's hard time limit (events.tasks), so the sweeper never
# sends a second attempt while the first may still be talking to the receiver.
ATTEMPT_TIME_LIMIT_SECONDS = 60
ATTEMPT_LOCK_SECONDS = ATTEMPT_TIME_LIMIT_SECONDS + 30
EVENT_ID_NAMESPACE = uuid.UUID("6f1d1c4e-5b1a-4f4e-9a57-2f0c3e5d7a10")


@dataclass(frozen=True)
class CreatedEndpoint:
    endpoint: WebhookEndpoint
    secret: str  # shown once


def _tenant_id(tenant: Tenant | Any) -> Any:
    return getattr(tenant, "pk", tenant)


def _new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _clean_event_types(event_types: Any) -> list[str]:
    if not isinstance(event_types, list) or not event_types or not all(isinstance(t, str) for t in event_types):
        raise ServiceError(
            "event_types is a non-empty list of event types.",
            code="invalid_event_types",
            details={"known": sorted(EVENT_TYPES)},
        )
    unknown = sorted(set(event_types) - set(EVENT_TYPES))
    if unknown:
        raise ServiceError(
            f"Unknown event types: {', '.join(unknown)[:200]}.",
            code="invalid_event_types",
            details={"unknown": unknown[:20], "known": sorted(EVENT_TYPES)},
        )
    return sorted(set(event_types))


def _locked_endpoint(tenant: Tenant, endpoint_id) -> WebhookEndpoint:
    try:
        uuid.UUID(str(endpoint_id))
    except ValueError:
        raise NotFoundError("No such webhook.") from None
    endpoint = WebhookEndpoint.objects.for_tenant(tenant).select_for_update().filter(pk=endpoint_id).first()
    if endpoint is None:
        raise NotFoundError("No such webhook.")
    return endpoint


class SecretUnreadable(Exception):
    """The endpoint's signing secret was sealed under another SECRET_KEY: it must be rotated."""


def secrets_for(endpoint: WebhookEndpoint, *, now=None) -> list[str]:
    """The secrets a body is signed with now: the current one, and the previous one during a rotation's overlap
    (skipped when it cannot be read any more). ``SecretUnreadable`` when the current one cannot."""
    now = now or timezone.now()
    current = sealing.unseal_or_none(endpoint.secret_sealed, endpoint_id=endpoint.pk)
    if current is None:
        raise SecretUnreadable("the signing secret cannot be read (SECRET_KEY changed?): rotate it")
    found = [current]
    if (
        endpoint.previous_secret_sealed
        and endpoint.previous_secret_expires_at
        and endpoint.previous_secret_expires_at > now
    ):
        previous = sealing.unseal_or_none(endpoint.previous_secret_sealed, endpoint_id=endpoint.pk)
        found += [previous] if previous is not None else []
    return found


# --- endpoints ---------------------------------------------------------------------------


@transaction.atomic
def create_endpoint(
    *, tenant: Tenant, url: str, event_types: list[str], description: str = "", is_active: bool = True
) -> CreatedEndpoint:
    """Register an endpoint (its URL checked against SSRF now, and again at every delivery); the secret once."""
    types = _clean_event_types(event_types)
    network.resolve(url)  # before any lock: a lookup may take seconds
    tenant_services.lock_tenant(tenant_id=tenant.pk)
    limit = settings.WEBHOOK_MAX_ENDPOINTS_PER_TENANT
    if WebhookEndpoint.objects.for_tenant(tenant).count() >= limit:
        raise ConflictError(
            f"A tenant has at most {limit} webhook endpoints.", code="webhook_limit_reached", details={"limit": limit}
        )
    endpoint = WebhookEndpoint(
        tenant=tenant, url=url, event_types=types, description=description[:200], is_active=is_active
    )
    secret = _new_secret()
    endpoint.secret_sealed = sealing.seal(secret, endpoint_id=endpoint.pk)
    endpoint.save()
    audit.record(tenant=tenant, action="webhook.create", target=endpoint, details={"url": url, "event_types": types})
    return CreatedEndpoint(endpoint=endpoint, secret=secret)


def update_endpoint(*, tenant: Tenant, endpoint_id, **changes: Any) -> WebhookEndpoint:
    """Change ``url``, ``event_types``, ``description`` or ``is_active``; re-enabling forgets past failures."""
    if "url" in changes:
        # Another tenant's id is 404 before any lookup, and the lookup (seconds, maybe) holds no row lock.
        with transaction.atomic():
            _locked_endpoint(tenant, endpoint_id)
        network.resolve(changes["url"])
    with transaction.atomic():
        return _apply_changes(_locked_endpoint(tenant, endpoint_id), tenant, changes)


def _apply_changes(endpoint: WebhookEndpoint, tenant: Tenant, changes: dict[str, Any]) -> WebhookEndpoint:
    fields = []
    if "url" in changes:
        endpoint.url = changes["url"]
        fields.append("url")
    if "event_types" in changes:
        endpoint.event_types = _clean_event_types(changes["event_types"])
        fields.append("event_types")
    if "description" in changes:
        endpoint.description = changes["description"][:200]
        fields.append("description")
    if "is_active" in changes:
        endpoint.is_active = bool(changes["is_active"])
        if endpoint.is_active:
            endpoint.failing_since, endpoint.consecutive_failures = None, 0
            endpoint.disabled_reason, endpoint.disabled_at = "", None
        else:
            endpoint.disabled_reason, endpoint.disabled_at = "disabled by the tenant", timezone.now()
        fields += ["is_active", "failing_since", "consecutive_failures", "disabled_reason", "disabled_at"]
    endpoint.updated_at = timezone.now()
    endpoint.save(update_fields=[*fields, "updated_at"])
    audit.record(tenant=tenant, action="webhook.update", target=endpoint, details={"fields": sorted(set(fields))})
    return endpoint


@transaction.atomic
def delete_endpoint(*, tenant: Tenant, endpoint_id) -> None:
    endpoint = _locked_endpoint(tenant, endpoint_id)
    audit.record(tenant=tenant, action="webhook.delete", target=endpoint, details={"url": endpoint.url})
    endpoint.delete()


@transaction.atomic
def rotate_secret(*, tenant: Tenant, endpoint_id) -> CreatedEndpoint:
    """A new secret (shown once); the old one still signs, beside it, for 24 hours."""
    endpoint = _locked_endpoint(tenant, endpoint_id)
    secret = _new_secret()
    # The old secret keeps signing through the overlap, unless it cannot be read (then there is nothing to keep).
    readable = sealing.unseal_or_none(endpoint.secret_sealed, endpoint_id=endpoint.pk) is not None
    endpoint.previous_secret_sealed = endpoint.secret_sealed if readable else None
    endpoint.previous_secret_expires_at = timezone.now() + ROTATION_OVERLAP if readable else None
    endpoint.secret_sealed = sealing.seal(secret, endpoint_id=endpoint.pk)
    endpoint.updated_at = timezone.now()
    endpoint.save(update_fields=["previous_secret_sealed", "previous_secret_expires_at", "secret_sealed", "updated_at"])
    audit.record(tenant=tenant, action="webhook.rotate_secret", target=endpoint)
    return CreatedEndpoint(endpoint=endpoint, secret=secret)


@transaction.atomic
def ping(*, tenant: Tenant, endpoint_id) -> WebhookDelivery:
    """Send a ``webhook.ping`` event to this endpoint alone (also when it is disabled: to test it first)."""
    endpoint = _locked_endpoint(tenant, endpoint_id)
    _refuse_backlog(endpoint)
    event = WebhookEvent.objects.create(tenant_id=endpoint.tenant_id, type=PING, data={"webhook": str(endpoint.pk)})
    audit.record(tenant=tenant, action="webhook.ping", target=endpoint, details={"event": event.id})
    return _queue_delivery(endpoint, event, force=True)


@transaction.atomic
def redeliver(*, tenant: Tenant, delivery_id) -> WebhookDelivery:
    """Send a delivery's event again as a new delivery (same event id: receivers deduplicate by it)."""
    try:
        uuid.UUID(str(delivery_id))
    except ValueError:
        raise NotFoundError("No such delivery.") from None
    original = (
        WebhookDelivery.objects.for_tenant(tenant).select_related("endpoint", "event").filter(pk=delivery_id).first()
    )
    if original is None:
        raise NotFoundError("No such delivery.")
    if original.status == Status.PENDING:
        raise ConflictError("This delivery is still being retried.", code="delivery_pending")
    endpoint = _locked_endpoint(tenant, original.endpoint_id)
    if not endpoint.is_active:
        raise ConflictError("The webhook is disabled; enable it first.", code="webhook_disabled")
    _refuse_backlog(endpoint)
    audit.record(tenant=tenant, action="webhook.redeliver", target=original, details={"event": original.event_id})
    return _queue_delivery(endpoint, original.event)


def _refuse_backlog(endpoint: WebhookEndpoint) -> None:
    """Pings and redeliveries are the tenant's own to ask for: not while the endpoint already has a backlog (each
    delivery may cost up to WEBHOOK_MAX_ATTEMPTS attempts of a worker's time)."""
    pending = WebhookDelivery.objects.filter(endpoint=endpoint, status=Status.PENDING).count()
    if pending >= PENDING_PER_ENDPOINT_FOR_REQUESTS:
        raise ServiceError(
            f"This webhook has {pending} deliveries waiting; try again once they are sent.",
            code="webhook_backlog",
            status_code=429,
            details={"pending": pending, "limit": PENDING_PER_ENDPOINT_FOR_REQUESTS},
        )


def _queue_delivery(endpoint: WebhookEndpoint, event: WebhookEvent, *, force: bool = False) -> WebhookDelivery:
    delivery = WebhookDelivery.objects.create(
        tenant_id=endpoint.tenant_id, endpoint=endpoint, event=event, next_attempt_at=timezone.now()
    )
    queue.send_on_commit(DELIVER, robust=True, delivery_id=str(delivery.pk), **({"force": True} if force else {}))
    return delivery


# --- emitting ------------------------------------------------------------------------------


def emit(
    *, tenant: Tenant | Any, event_type: str, data: dict[str, Any], once_key: str | None = None
) -> WebhookEvent | None:
    """Record an event and a delivery to each active endpoint subscribed to it; sent once the caller commits.

    Call it inside the transaction of the change it describes. Nothing is written when no endpoint wants it.
    ``once_key`` names the occurrence (a job's attempt ending, a version becoming ready): the event id is derived
    from it, so a service call repeated after a lost connection does not send the event twice.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    tenant_id = _tenant_id(tenant)
    event_id = f"evt_{uuid.uuid5(EVENT_ID_NAMESPACE, f'{tenant_id}:{event_type}:{once_key}').hex}" if once_key else None
    if event_id and WebhookEvent.objects.filter(pk=event_id).exists():
        return None
    endpoints = [
        endpoint
        for endpoint in WebhookEndpoint.objects.for_tenant(tenant_id).filter(is_active=True)
        if event_type in endpoint.event_types
    ][: settings.WEBHOOK_MAX_ENDPOINTS_PER_TENANT]
    if not endpoints:
        return None
    with transaction.atomic():
        event = WebhookEvent.objects.create(
            tenant_id=tenant_id, type=event_type, data=data, **({"id": event_id} if event_id else {})
        )
        for endpoint in endpoints:
            _queue_delivery(endpoint, event)
    return event


def scalar_values(mapping: dict[str, Any] | None) -> dict[str, int | float]:
    """The numbers of ``mapping`` (metrics without their curves and matrices): what an event's data carries."""
    return {k: v for k, v in (mapping or {}).items() if isinstance(v, int | float) and not isinstance(v, bool)}


def quota_nearly_used(*, tenant: Tenant | Any, quota: str, used: float, limit: float, period: str) -> bool:
    """Emit ``quota.nearly_used`` the first time ``used`` reaches WEBHOOK_QUOTA_THRESHOLD of ``limit`` in ``period``.

    The alert row is unique per tenant, quota and period, so callers may check as often as they like (every
    submission, every roll-up); True when this call sent it.
    """
    threshold = settings.WEBHOOK_QUOTA_THRESHOLD_PERCENT / 100
    if not limit or used < threshold * limit:
        return False
    tenant_id = _tenant_id(tenant)
    with transaction.atomic():
        _, created = QuotaAlert.objects.get_or_create(
            tenant_id=tenant_id, quota=quota, period=period, defaults={"used": used, "limit": limit}
        )
        if created:
            emit(
                tenant=tenant_id,
                event_type="quota.nearly_used",
                data={
                    "quota": quota,
                    "period": period,
                    "used": used,
                    "limit": limit,
                    "used_percent": round(100 * used / limit, 1),
                    "threshold_percent": settings.WEBHOOK_QUOTA_THRESHOLD_PERCENT,
                },
            )
    return created


# --- delivering ----------------------------------------------------------------------------


def payload(event: WebhookEvent) -> bytes:
    """The body every endpoint gets for ``event`` (the same bytes on every attempt)."""
    body = {
        "id": event.id,
        "type": event.type,
        "created_at": event.created_at.isoformat(),
        "tenant": str(event.tenant_id),
        "data": event.data,
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True, default=str).encode()


def backoff_seconds(attempt: int) -> float:
    """Wait after failed attempt number ``attempt`` (1-based): base x factor^(attempt-1), capped, +-20% jitter."""
    base = settings.WEBHOOK_RETRY_BASE_SECONDS * settings.WEBHOOK_RETRY_FACTOR ** (attempt - 1)
    return min(base, settings.WEBHOOK_RETRY_MAX_SECONDS) * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not secrecy


@dataclass(frozen=True)
class Outcome:
    """What an attempt came to; ``retry_in`` seconds when the delivery waits for another attempt."""

    status: str
    retry_in: float | None = None


def _claim(delivery_id, *, now, force: bool) -> tuple[WebhookDelivery | None, Outcome | None]:
    """Take the delivery for one attempt, or say why not (done, not due, held by another attempt, tenant busy)."""
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(of=("self",))
            .select_related("endpoint", "event")
            .filter(pk=delivery_id)
            .first()
        )
        if delivery is None or delivery.status != Status.PENDING:
            return None, Outcome(status=delivery.status if delivery else "missing")
        if delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:  # an attempt that died before it was recorded
            delivery.status, delivery.next_attempt_at, delivery.locked_until = Status.FAILED, None, None
            delivery.last_error = delivery.last_error or "no attempt left"
            delivery.save(update_fields=["status", "next_attempt_at", "locked_until", "last_error"])
            return None, Outcome(status=Status.FAILED)
        if delivery.locked_until and delivery.locked_until > now:
            return None, Outcome(status="in_progress")
        if delivery.next_attempt_at and delivery.next_attempt_at > now:
            return None, Outcome(status="not_due", retry_in=(delivery.next_attempt_at - now).total_seconds())
        if not delivery.endpoint.is_active and not force:
            delivery.status, delivery.last_error = Status.FAILED, "the webhook is disabled"
            delivery.save(update_fields=["status", "last_error"])
            return None, Outcome(status=Status.FAILED)
        tenant_services.lock_tenant(tenant_id=delivery.tenant_id)  # claims of one tenant one at a time: an exact count
        busy = (
            WebhookDelivery.objects.filter(tenant_id=delivery.tenant_id, status=Status.PENDING, locked_until__gt=now)
            .exclude(pk=delivery.pk)
            .count()
        )
        if busy >= settings.WEBHOOK_CONCURRENT_PER_TENANT:
            # The tenant's other attempts hold their slots: wait a little, without spending an attempt.
            return None, Outcome(status="tenant_busy", retry_in=2 + random.uniform(0, 3))  # noqa: S311
        delivery.attempts += 1
        delivery.locked_until = now + timedelta(seconds=ATTEMPT_LOCK_SECONDS)
        delivery.save(update_fields=["attempts", "locked_until"])
        return delivery, None


def attempt_delivery(*, delivery_id, force: bool = False) -> Outcome:
    """One attempt of a pending, due delivery; safe to call twice (the second finds it claimed or done)."""
    now = timezone.now()
    delivery, refused = _claim(delivery_id, now=now, force=force)
    if refused is not None:
        return refused
    endpoint, event = delivery.endpoint, delivery.event
    body = payload(event)
    timestamp = int(now.timestamp())
    try:
        headers = {
            signing.SIGNATURE_HEADER: signing.signature_header(secrets_for(endpoint, now=now), timestamp, body),
            signing.EVENT_ID_HEADER: event.id,
            signing.EVENT_TYPE_HEADER: event.type,
        }
        answer = network.post(network.resolve(endpoint.url), body, headers)
    except network.UnsafeURL as exc:
        answer = network.Answer(status_code=None, error=f"refused: {exc.message}", duration_ms=0)
    except SecretUnreadable as exc:
        answer = network.Answer(status_code=None, error=str(exc), duration_ms=0)
    except Exception as exc:  # recorded as a failed attempt: a claimed delivery must never be left to loop
        logger.exception("webhook delivery %s failed before its answer", delivery.pk)
        answer = network.Answer(status_code=None, error=f"internal error: {exc.__class__.__name__}", duration_ms=0)
    return _record(delivery, answer, started=now)


def _record(delivery: WebhookDelivery, answer: network.Answer, *, started) -> Outcome:
    now = timezone.now()
    code = answer.status_code
    succeeded = code is not None and 200 <= code < 300
    error = answer.error or (
        "" if succeeded else f"HTTP {code}" + (" (redirects are not followed)" if code and 300 <= code < 400 else "")
    )
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().filter(pk=delivery.endpoint_id).first()
        if endpoint is None:  # deleted during the attempt, and its deliveries with it
            return Outcome(status="missing")
        DeliveryAttempt.objects.create(
            tenant_id=delivery.tenant_id,
            delivery=delivery,
            number=delivery.attempts,
            started_at=started,
            duration_ms=answer.duration_ms,
            status_code=code,
            error=error[:500],
        )
        delivery.last_status_code, delivery.last_error, delivery.last_attempt_at = code, error[:500], now
        delivery.locked_until = None
        retry_in = None
        if succeeded:
            delivery.status, delivery.delivered_at, delivery.next_attempt_at = Status.SUCCEEDED, now, None
            if endpoint.failing_since or endpoint.consecutive_failures:
                endpoint.failing_since, endpoint.consecutive_failures = None, 0
                endpoint.save(update_fields=["failing_since", "consecutive_failures"])
        else:
            endpoint.consecutive_failures += 1
            endpoint.failing_since = endpoint.failing_since or started
            disabled = ""
            if code == 410:
                disabled = "the endpoint answered 410 Gone"
            elif (
                endpoint.consecutive_failures >= settings.WEBHOOK_DISABLE_AFTER_FAILURES
                and (now - endpoint.failing_since).total_seconds() >= settings.WEBHOOK_DISABLE_AFTER_SECONDS
            ):
                disabled = f"every attempt failed since {endpoint.failing_since:%Y-%m-%d %H:%M} UTC"
            if disabled and endpoint.is_active:
                endpoint.is_active, endpoint.disabled_reason, endpoint.disabled_at = False, disabled, now
                audit.record(
                    tenant=endpoint.tenant_id, action="webhook.disabled", target=endpoint, details={"reason": disabled}
                )
                logger.info("webhook %s of tenant %s disabled: %s", endpoint.pk, endpoint.tenant_id, disabled)
            endpoint.save(
                update_fields=["consecutive_failures", "failing_since", "is_active", "disabled_reason", "disabled_at"]
            )
            if disabled:
                delivery.status, delivery.next_attempt_at = Status.FAILED, None
                delivery.last_error = f"{error}; webhook disabled: {disabled}"[:500]
            elif delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
                delivery.status, delivery.next_attempt_at = Status.FAILED, None
            else:
                retry_in = backoff_seconds(delivery.attempts)
                delivery.next_attempt_at = now + timedelta(seconds=retry_in)
        delivery.save(
            update_fields=[
                "status",
                "delivered_at",
                "next_attempt_at",
                "last_status_code",
                "last_error",
                "last_attempt_at",
                "locked_until",
            ]
        )
    return Outcome(status=delivery.status, retry_in=retry_in)


def send_due_deliveries(*, overdue_seconds: float = 20, limit: int = 500) -> int:
    """Send the task for pending deliveries past their time (a lost message, a broker outage, long waits the
    task left to this sweeper); the claim makes a duplicate message harmless."""
    now = timezone.now()
    due = (
        WebhookDelivery.objects.filter(
            status=Status.PENDING, next_attempt_at__lte=now - timedelta(seconds=overdue_seconds)
        )
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    sent = 0
    for delivery_id in due:
        queue.send(DELIVER, delivery_id=str(delivery_id))
        sent += 1
    return sent


def purge_old_events(*, now=None) -> int:
    """Delete events (with their deliveries and attempts) older than WEBHOOK_RETENTION_DAYS, except those still
    being retried: the delivery log is a recent history, not an archive (the audit log is that)."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.WEBHOOK_RETENTION_DAYS)
    old = WebhookEvent.objects.filter(created_at__lt=cutoff).exclude(deliveries__status=Status.PENDING)
    deleted, _ = WebhookEvent.objects.filter(pk__in=old.values("pk")).delete()
    return deleted
