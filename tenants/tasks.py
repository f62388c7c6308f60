"""Periodic tenant bookkeeping: expired Idempotency-Key answers (beat runs it hourly)."""

from __future__ import annotations

from celery import shared_task

from tenants import idempotency


@shared_task(name="tenants.tasks.purge_idempotency_records", acks_late=True)
def purge_idempotency_records() -> int:
    """Delete stored Idempotency-Key answers past their 24 hours (a late one is also ignored when read)."""
    return idempotency.purge_expired()
