"""Periodic tenant bookkeeping: the daily usage roll-up and expired Idempotency-Key answers (beat runs both hourly)."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from tenants import idempotency, services


@shared_task(name="tenants.tasks.aggregate_usage", acks_late=True)
def aggregate_usage() -> int:
    """Rebuild yesterday's records (late meters and jobs land) and today's so far."""
    today = timezone.now().date()
    return sum(services.aggregate_usage(day=day) for day in (today - timedelta(days=1), today))


@shared_task(name="tenants.tasks.purge_idempotency_records", acks_late=True)
def purge_idempotency_records() -> int:
    """Delete stored Idempotency-Key answers past their 24 hours (a late one is also ignored when read)."""
    return idempotency.purge_expired()
