"""Celery tasks for datasets: thin wrappers over services, taking ids, safe to retry."""

from celery import shared_task

from datasets import services


@shared_task(
    name="datasets.tasks.validate_dataset",
    acks_late=True,
    autoretry_for=(ConnectionError, OSError),
    retry_backoff=5,
    retry_backoff_max=300,
    max_retries=5,
    time_limit=3 * 3600,
    soft_time_limit=3 * 3600 - 60,
)
def validate_dataset(*, dataset_id: str) -> None:
    services.validate_dataset(dataset_id=dataset_id)


@shared_task(name="datasets.tasks.abort_abandoned_uploads", acks_late=True)
def abort_abandoned_uploads() -> int:
    return services.abort_abandoned_uploads()


@shared_task(name="datasets.tasks.requeue_stuck_validations", acks_late=True)
def requeue_stuck_validations() -> int:
    return services.requeue_stuck_validations()
