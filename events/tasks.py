"""Webhook delivery tasks: ids in, one attempt each, retries sent with a countdown (long waits: the sweeper)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from events import services


@shared_task(
    name="events.tasks.deliver",
    acks_late=True,
    # DNS (bounded), then one attempt cut at WEBHOOK_TOTAL_TIMEOUT_SECONDS; these only stop a stuck worker.
    soft_time_limit=services.ATTEMPT_TIME_LIMIT_SECONDS - 15,
    time_limit=services.ATTEMPT_TIME_LIMIT_SECONDS,
)
def deliver(delivery_id: str, force: bool = False) -> str:
    """One attempt; a retry due within WEBHOOK_COUNTDOWN_MAX_SECONDS is sent with a countdown, a later one is left
    to ``send_due_deliveries`` (a broker holding hours-long countdowns in workers' memory is worse)."""
    outcome = services.attempt_delivery(delivery_id=delivery_id, force=force)
    if outcome.retry_in is not None and outcome.retry_in <= settings.WEBHOOK_COUNTDOWN_MAX_SECONDS:
        deliver.apply_async(kwargs={"delivery_id": delivery_id, "force": force}, countdown=outcome.retry_in)
    return outcome.status


@shared_task(name="events.tasks.send_due_deliveries", acks_late=True)
def send_due_deliveries() -> int:
    return services.send_due_deliveries()


@shared_task(name="events.tasks.purge_old_events", acks_late=True)
def purge_old_events() -> int:
    return services.purge_old_events()
