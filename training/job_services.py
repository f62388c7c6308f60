"""Writes for training jobs: submission checks, fair dispatch, state changes, cancellation, reaping.

The worker-side steps (claiming a job, recording epochs, finishing) live here
too, so the Celery task and the trainer stay thin and every state change goes
through one place.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from datetime import timedelta
from typing import Any

import jsonschema
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from core.errors import ConflictError, QuotaExceededError, ServiceError
from tenants import audit
from tenants.models import Tenant
from training.models import Dataset, JobLogLine, JobMetric, TrainingJob
from training.templates import TEMPLATES, Template

logger = logging.getLogger(__name__)
MODEL_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
LOG_LINE_MAX = 2000
Status = TrainingJob.Status


# --- submission -------------------------------------------------------------------------


def compute_seconds_this_month(*, tenant: Tenant, now=None) -> float:
    now = now or timezone.now()
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    jobs = TrainingJob.objects.for_tenant(tenant).filter(Q(finished_at__gte=start) | Q(finished_at__isnull=True))
    return float(jobs.aggregate(total=Sum("compute_seconds"))["total"] or 0.0)


def _schema_types(dataset: Dataset) -> dict[str, str]:
    return {column["name"]: column["type"] for column in dataset.schema}


def _check_columns(template: Template, dataset: Dataset, label_column: str, feature_columns: list[str]) -> list[str]:
    spec = template.columns
    types = _schema_types(dataset)
    if label_column not in types:
        raise ServiceError(
            f"label_column {label_column!r} is not a column of the dataset.",
            code="unknown_column",
            details={"label_column": label_column},
        )
    if types[label_column] not in spec.label_types:
        raise ServiceError(
            f"{template.name} needs a label of type {' or '.join(spec.label_types)}; "
            f"{label_column!r} is {types[label_column]}.",
            code="wrong_column_type",
            details={"label_column": label_column},
        )
    if not feature_columns:
        candidates = [n for n, t in types.items() if n != label_column and t in spec.feature_types]
        if spec.max_features == 1 and len(candidates) == 1:
            feature_columns = candidates
        else:
            raise ServiceError(
                f"Name the feature_columns for {template.name}.",
                code="feature_columns_required",
                details={"candidates": candidates[:50]},
            )
    unknown = [c for c in feature_columns if c not in types]
    if unknown:
        raise ServiceError(
            "feature_columns names columns the dataset lacks.",
            code="unknown_column",
            details={"feature_columns": unknown},
        )
    if label_column in feature_columns or len(set(feature_columns)) != len(feature_columns):
        raise ServiceError("feature_columns must be distinct and must not include the label.", code="invalid_columns")
    if len(feature_columns) < spec.min_features or (spec.max_features and len(feature_columns) > spec.max_features):
        raise ServiceError(
            f"{template.name} takes {spec.min_features} to {spec.max_features or 'any number of'} feature columns.",
            code="wrong_feature_count",
        )
    wrong = {c: types[c] for c in feature_columns if types[c] not in spec.feature_types}
    if wrong:
        raise ServiceError(
            f"{template.name} reads columns of type {', '.join(spec.feature_types)}.",
            code="wrong_column_type",
            details={"feature_columns": wrong},
        )
    classes = len((dataset.stats or {}).get("label_distribution") or {})
    if dataset.label_column != label_column:
        classes = (dataset.stats.get("columns", {}).get(label_column, {}) or {}).get("distinct", 0)
    if classes < 2:
        raise ServiceError(f"The label {label_column!r} has fewer than two classes.", code="single_class_label")
    if spec.task == "binary" and classes != 2:
        raise ServiceError(
            f"{template.name} is a binary model; {label_column!r} has {classes} classes.", code="not_binary_label"
        )
    return list(feature_columns)


@transaction.atomic
def create_job(
    *,
    tenant: Tenant,
    dataset_id,
    template: str,
    model_name: str,
    label_column: str,
    params: dict[str, Any] | None = None,
    feature_columns: list[str] | None = None,
    validation_split: float = 0.2,
    seed: int = 0,
) -> TrainingJob:
    """Check everything a worker would trip over, then queue the job (dispatch follows the commit)."""
    chosen = TEMPLATES.get(template)
    if chosen is None:
        raise ServiceError(
            f"Unknown template {template!r}.", code="unknown_template", details={"templates": sorted(TEMPLATES)}
        )
    if not MODEL_NAME_RE.match(model_name or ""):
        raise ServiceError(
            "model_name is 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit.",
            code="invalid_model_name",
        )
    dataset = Dataset.objects.for_tenant(tenant).filter(pk=dataset_id).first()
    if dataset is None:
        raise ServiceError("No such dataset.", code="unknown_dataset", details={"dataset": str(dataset_id)})
    if dataset.status != Dataset.Status.READY:
        raise ConflictError(f"The dataset is {dataset.status}, not ready.", code="dataset_not_ready")
    try:
        resolved = chosen.resolve_params(params or {})
    except jsonschema.ValidationError as exc:
        path = ".".join(str(p) for p in exc.absolute_path) or "params"
        raise ServiceError(
            f"params.{path}: {exc.message}", code="invalid_params", details={path: exc.message}
        ) from None
    columns = _check_columns(chosen, dataset, label_column, list(feature_columns or []))
    if not 0.05 <= validation_split <= 0.5:
        raise ServiceError("validation_split is between 0.05 and 0.5.", code="invalid_validation_split")
    plan = tenant.plan
    if compute_seconds_this_month(tenant=tenant) >= plan.compute_seconds_per_month:
        raise QuotaExceededError(
            f"This month's {plan.compute_seconds_per_month} compute seconds are spent.", code="compute_quota_exceeded"
        )
    job = TrainingJob.objects.create(
        tenant=tenant,
        dataset=dataset,
        template=template,
        model_name=model_name,
        params=resolved,
        label_column=label_column,
        feature_columns=columns,
        validation_split=validation_split,
        seed=seed,
        max_attempts=settings.TRAINING_MAX_ATTEMPTS,
    )
    log(job, f"queued: {template} on dataset {dataset.name} v{dataset.version}")
    audit.record(
        tenant=tenant,
        action="job.create",
        target=job,
        details={"template": template, "model_name": model_name, "dataset": str(dataset.id)},
    )
    transaction.on_commit(request_dispatch)
    return job


# --- fair dispatch -----------------------------------------------------------------------


def request_dispatch() -> None:
    """Ask a worker to dispatch now; when the broker is down, beat's periodic dispatch sends the jobs later.

    Called after commits (a job created, finished or requeued): the change is
    already saved, so a broker outage must not turn it into an error.
    """
    from kombu.exceptions import OperationalError as BrokerError

    from training.tasks import dispatch_jobs

    try:
        dispatch_jobs.delay()
    except (BrokerError, OSError) as exc:
        logger.warning("dispatch request not sent (broker unavailable: %s); the periodic dispatch will send it", exc)


def dispatch_queued_jobs() -> list[str]:
    """Send queued jobs to the gpu queue, fairly across tenants and within each plan's concurrency.

    A tenant's jobs in flight (dispatched, running or cancelling) never exceed
    its plan's ``max_concurrent_jobs``; the rest wait ``queued``. Tenants take
    turns (fewest in flight first, then the longest waiting), so one tenant's
    fifty jobs never sit in front of another tenant's first. A conditional
    update claims each job, so concurrent dispatchers cannot send one twice.
    """
    in_flight: dict[Any, int] = defaultdict(int)
    for row in TrainingJob.objects.filter(
        Q(status__in=[Status.RUNNING, Status.CANCELLING]) | Q(status=Status.QUEUED, dispatched_at__isnull=False)
    ).values("tenant_id"):
        in_flight[row["tenant_id"]] += 1
    waiting: dict[Any, list[TrainingJob]] = defaultdict(list)
    for job in (
        TrainingJob.objects.filter(status=Status.QUEUED, dispatched_at__isnull=True)
        .select_related("tenant__plan")
        .order_by("created_at")[: settings.TRAINING_DISPATCH_BATCH]
    ):
        waiting[job.tenant_id].append(job)

    sent: list[str] = []
    while waiting:
        turn = sorted(waiting, key=lambda t: (in_flight[t], waiting[t][0].created_at))
        progressed = False
        for tenant_id in turn:
            job = waiting[tenant_id][0]
            if in_flight[tenant_id] >= job.tenant.plan.max_concurrent_jobs:
                del waiting[tenant_id]
                continue
            waiting[tenant_id].pop(0)
            if not waiting[tenant_id]:
                del waiting[tenant_id]
            claimed = TrainingJob.objects.filter(pk=job.pk, status=Status.QUEUED, dispatched_at__isnull=True).update(
                dispatched_at=timezone.now()
            )
            if claimed:
                in_flight[tenant_id] += 1
                sent.append(str(job.pk))
                progressed = True
        if not progressed:
            break
    from training.tasks import train_model

    for job_id in sent:
        train_model.apply_async(kwargs={"job_id": job_id})
    return sent


# --- cancellation ------------------------------------------------------------------------


def cancel_job(*, tenant: Tenant, job_id) -> TrainingJob:
    """A queued job is cancelled at once; a running one is asked to stop at its next batch."""
    now = timezone.now()
    with transaction.atomic():
        job = TrainingJob.objects.for_tenant(tenant).select_for_update().filter(pk=job_id).first()
        if job is None:
            from core.errors import NotFoundError

            raise NotFoundError("No such job.")
        if job.status in TrainingJob.TERMINAL:
            raise ConflictError(f"The job already ended ({job.status}).", code="job_finished")
        if job.status == Status.QUEUED:
            job.status, job.finished_at = Status.CANCELLED, now
            log(job, "cancelled before it started")
        elif job.status == Status.RUNNING:
            job.status = Status.CANCELLING
            log(job, "cancellation requested; stopping at the next batch")
        job.cancel_requested_at = job.cancel_requested_at or now
        job.save(update_fields=["status", "finished_at", "cancel_requested_at"])
        audit.record(tenant=tenant, action="job.cancel", target=job, details={"status": job.status})
    transaction.on_commit(request_dispatch)
    return job


# --- worker side -------------------------------------------------------------------------


def claim_job(*, job_id, worker: str) -> TrainingJob | None:
    """Mark a job running for this worker, or None when it must not run here.

    Safe against redelivered and duplicate messages: a job runs only when it
    was dispatched and not yet started, or when it was running but its
    heartbeat stopped (its worker died). Each start counts an attempt.
    """
    now = timezone.now()
    stale = now - timedelta(seconds=settings.TRAINING_HEARTBEAT_TIMEOUT_SECONDS)
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            return None
        runnable = job.status == Status.QUEUED or (
            job.status == Status.RUNNING
            and (job.heartbeat_at is None or job.heartbeat_at < stale or _died_on_this_host(job.worker, worker))
        )
        if not runnable:
            return None
        if job.attempts >= job.max_attempts:
            _fail(job, f"gave up after {job.attempts} attempts (the worker kept stopping)", "")
            return None
        job.status = Status.RUNNING
        job.attempts = F("attempts") + 1
        job.worker = worker[:200]
        job.started_at = job.started_at or now
        job.heartbeat_at = now
        job.save(update_fields=["status", "attempts", "worker", "started_at", "heartbeat_at"])
    job.refresh_from_db()
    log(job, f"attempt {job.attempts} started on {worker}")
    return job


def worker_identity(hostname: str) -> str:
    """``hostname:pid`` of the process running an attempt."""
    return f"{hostname}:{os.getpid()}"


def _died_on_this_host(previous: str, current: str) -> bool:
    """The previous attempt ran on this host in a process that no longer exists (e.g. SIGKILLed).

    Celery redelivers such a task at once (acks_late + reject_on_worker_lost);
    waiting for the heartbeat timeout would only delay the resume.
    """
    host, _, pid = previous.rpartition(":")
    if not pid.isdigit() or host != current.rpartition(":")[0]:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def heartbeat(*, job_id, progress: dict[str, Any]) -> str:
    """Record progress and liveness; returns the job's status (so the trainer sees a cancel)."""
    now = timezone.now()
    if TrainingJob.objects.filter(pk=job_id, status=Status.RUNNING).update(heartbeat_at=now, progress=progress):
        return Status.RUNNING  # the common case: one query
    TrainingJob.objects.filter(pk=job_id, status=Status.CANCELLING).update(heartbeat_at=now, progress=progress)
    return TrainingJob.objects.filter(pk=job_id).values_list("status", flat=True).first() or Status.FAILED


def keep_alive(*, job: TrainingJob) -> bool:
    """A heartbeat that leaves the progress as it is (a worker waiting out an outage); False once the job is no
    longer this attempt's to run (requeued meanwhile, or cancelled)."""
    return bool(_attempt(job).filter(status=Status.RUNNING).update(heartbeat_at=timezone.now()))


def finish_if_cancelled(*, job: TrainingJob, compute_seconds: float, device: str) -> bool:
    """An attempt that stopped on an outage while its job was being cancelled ends the job as cancelled."""
    if not _attempt(job).filter(status=Status.CANCELLING).exists():
        return False
    finish_job(job=job, status=Status.CANCELLED, compute_seconds=compute_seconds, device=device)
    return True


def record_epoch(*, job: TrainingJob, epoch: int, values: dict[str, float]) -> None:
    """Idempotent per epoch: a resumed attempt rewrites the row of an epoch it repeats."""
    JobMetric.objects.update_or_create(tenant_id=job.tenant_id, job=job, epoch=epoch, defaults={"values": values})


def record_timings(*, job: TrainingJob, timings: dict[str, float]) -> None:
    TrainingJob.objects.filter(pk=job.pk).update(timings=timings)


def log(job: TrainingJob, message: str) -> None:
    JobLogLine.objects.create(tenant_id=job.tenant_id, job=job, message=message[:LOG_LINE_MAX])


def finish_job(
    *,
    job: TrainingJob,
    status: str,
    compute_seconds: float,
    device: str,
    metrics: dict | None = None,
    model_version: int | None = None,
    error: str = "",
    traceback_text: str = "",
) -> None:
    now = timezone.now()
    if not _attempt(job).update(
        status=status,
        finished_at=now,
        heartbeat_at=now,
        device=device,
        metrics=metrics or {},
        model_version=model_version,
        error_message=error[:1000],
        error_traceback=traceback_text,
        compute_seconds=F("compute_seconds") + compute_seconds,
    ):
        logger.warning("job %s: attempt %s no longer owns it; its result (%s) is dropped", job.pk, job.attempts, status)
        return
    log(job, f"{status}" + (f": {error}" if error else ""))
    transaction.on_commit(request_dispatch)


def _attempt(job: TrainingJob):
    """The job's row while this attempt still owns it: a newer attempt (after this worker was presumed dead and
    the job requeued) owns it instead, and an old attempt's late writes must change nothing."""
    return TrainingJob.objects.filter(pk=job.pk, worker=job.worker, attempts=job.attempts)


def add_compute_seconds(*, job: TrainingJob, seconds: float) -> None:
    _attempt(job).update(compute_seconds=F("compute_seconds") + seconds)


def _fail(job: TrainingJob, message: str, traceback_text: str) -> None:
    job.status, job.finished_at = Status.FAILED, timezone.now()
    job.error_message, job.error_traceback = message[:1000], traceback_text
    job.save(update_fields=["status", "finished_at", "error_message", "error_traceback"])
    log(job, f"failed: {message}")


def requeue_stale_jobs() -> list[str]:
    """Jobs whose worker stopped beating are sent again (resuming from their checkpoint) or failed."""
    stale_before = timezone.now() - timedelta(seconds=settings.TRAINING_HEARTBEAT_TIMEOUT_SECONDS)
    requeued = []
    for job in TrainingJob.objects.filter(
        status__in=[Status.RUNNING, Status.CANCELLING], heartbeat_at__lt=stale_before
    ):
        with transaction.atomic():
            locked = TrainingJob.objects.select_for_update().filter(pk=job.pk, heartbeat_at__lt=stale_before).first()
            if locked is None:
                continue
            if locked.status == Status.CANCELLING:
                locked.status, locked.finished_at = Status.CANCELLED, timezone.now()
                locked.save(update_fields=["status", "finished_at"])
                log(locked, "cancelled (its worker stopped)")
            elif locked.attempts >= locked.max_attempts:
                _fail(locked, f"the worker stopped responding {locked.attempts} times", "")
            else:
                locked.status, locked.dispatched_at = Status.QUEUED, None
                locked.save(update_fields=["status", "dispatched_at"])
                log(locked, "worker stopped responding; requeued to resume from the last checkpoint")
                requeued.append(str(locked.pk))
    # Dispatched but never started: the message was lost (a broker restarted without persistence, a publish
    # failed). Sending it again is safe: a job starts only once, whatever number of messages name it.
    lost_before = timezone.now() - timedelta(seconds=settings.TRAINING_DISPATCH_TIMEOUT_SECONDS)
    for job in TrainingJob.objects.filter(status=Status.QUEUED, dispatched_at__lt=lost_before).only("pk", "tenant_id"):
        if TrainingJob.objects.filter(pk=job.pk, status=Status.QUEUED, dispatched_at__lt=lost_before).update(
            dispatched_at=None
        ):
            log(job, "still waiting for a worker; dispatched again")
            requeued.append(str(job.pk))
    if requeued:
        transaction.on_commit(request_dispatch)
    return requeued


def requeue_after_error(*, job: TrainingJob, reason: str) -> None:
    """Send a job back to the queue after a transient error; it resumes from its checkpoint."""
    if _attempt(job).filter(status=Status.RUNNING).update(status=Status.QUEUED, dispatched_at=None):
        log(job, f"transient error, will resume: {reason}")
        transaction.on_commit(request_dispatch)


@transaction.atomic
def retry_jobs(*, job_ids: list) -> int:
    """Operators' retry: failed or cancelled jobs go back to the queue with a fresh attempt budget."""
    locked = list(
        TrainingJob.objects.select_for_update()
        .filter(pk__in=job_ids, status__in=[Status.FAILED, Status.CANCELLED])
        .values_list("id", "tenant_id")
    )
    for job_id, tenant_id in locked:
        audit.record(tenant=tenant_id, action="job.retry", target=("trainingjob", job_id))
    count = TrainingJob.objects.filter(pk__in=[job_id for job_id, _ in locked]).update(
        status=Status.QUEUED,
        dispatched_at=None,
        finished_at=None,
        cancel_requested_at=None,
        attempts=0,
        error_message="",
        error_traceback="",
    )
    if count:
        transaction.on_commit(request_dispatch)
    return count
