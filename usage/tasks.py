"""Periodic usage roll-up (beat runs it hourly)."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from usage import services


@shared_task(name="usage.tasks.aggregate_usage", acks_late=True)
def aggregate_usage() -> int:
    """Rebuild yesterday's records (late meters and jobs land) and today's so far."""
    today = timezone.now().date()
    return sum(services.aggregate_usage(day=day) for day in (today - timedelta(days=1), today))
