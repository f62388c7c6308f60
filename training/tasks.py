"""Celery tasks for training jobs: thin wrappers over services, taking ids, safe to retry."""

from celery import shared_task
from django.conf import settings

from training import services


@shared_task(name="training.tasks.dispatch_jobs", acks_late=True)
def dispatch_jobs() -> int:
    return len(services.dispatch_queued_jobs())


@shared_task(name="training.tasks.requeue_stale_jobs", acks_late=True)
def requeue_stale_jobs() -> int:
    return len(services.requeue_stale_jobs())


@shared_task(
    bind=True,
    name="training.tasks.train_model",
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=settings.TRAINING_TIME_LIMIT_SECONDS,
    soft_time_limit=settings.TRAINING_TIME_LIMIT_SECONDS - 120,
)
def train_model(self, *, job_id: str) -> None:
    """Run one training job. The trainer module imports TensorFlow, so it is imported here, in the worker process
    that runs the job, and never by the API or by the other tasks."""
    from training.trainer.run import run_job

    run_job(job_id=job_id, worker=self.request.hostname or "worker")
