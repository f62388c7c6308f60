"""Celery tasks for datasets: thin wrappers over services, taking ids, safe to retry.

No TensorFlow import here: the trainer imports it inside the training task only.
"""

from celery import shared_task
from django.conf import settings

from training import services


@shared_task(
    name="training.tasks.validate_dataset",
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


@shared_task(name="training.tasks.abort_abandoned_uploads", acks_late=True)
def abort_abandoned_uploads() -> int:
    return services.abort_abandoned_uploads()


@shared_task(name="training.tasks.dispatch_jobs", acks_late=True)
def dispatch_jobs() -> int:
    from training import job_services

    return len(job_services.dispatch_queued_jobs())


@shared_task(name="training.tasks.requeue_stale_jobs", acks_late=True)
def requeue_stale_jobs() -> int:
    from training import job_services

    return len(job_services.requeue_stale_jobs())


@shared_task(
    bind=True,
    name="training.tasks.train_model",
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=settings.TRAINING_TIME_LIMIT_SECONDS,
    soft_time_limit=settings.TRAINING_TIME_LIMIT_SECONDS - 120,
)
def train_model(self, *, job_id: str) -> None:
    """Run one training job (TensorFlow is imported inside, in this worker process only)."""
    from training.trainer.run import run_job

    run_job(job_id=job_id, worker=self.request.hostname or "worker")


@shared_task(name="training.tasks.requeue_stuck_validations", acks_late=True)
def requeue_stuck_validations() -> int:
    return services.requeue_stuck_validations()
