from celery import shared_task

from core import probes


@shared_task(bind=True, name="core.tasks.probe_runtime", acks_late=True)
def probe_runtime(self, *, probe_id: str) -> None:
    """Report this worker's runtime to S3 (idempotent: the same key is rewritten)."""
    probes.record_probe(probe_id=probe_id, hostname=self.request.hostname or "unknown")
