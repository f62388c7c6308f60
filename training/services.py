"""Writes for training jobs: submission checks, fair dispatch, state changes, cancellation, reaping.

The worker-side steps (claiming a job, recording epochs, finishing) live here
too, so the Celery task and the trainer stay thin and every state change goes
through one place.
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import jsonschema
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, OuterRef, Subquery, Sum, Value, Window
from django.db.models.functions import Coalesce, RowNumber
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from core import naming, queue, storage
from core.errors import ConflictError, NotFoundError, QuotaExceededError, ServiceError
from datasets.models import Dataset
from events import services as events
from tenants import audit
from tenants import services as tenant_services
from tenants.models import Tenant
from training import privacy as dp
from training import selectors
from training.models import JobAttempt, JobLogLine, JobMetric, TrainingJob
from training.templates import TEMPLATES, Template

logger = logging.getLogger(__name__)
LOG_LINE_MAX = 2000
Status = TrainingJob.Status

# Why a job failed or stopped, as tenants see it: a code and a fixed plain message. The raw exception text and the
# traceback go to the worker's log and to ``error_traceback`` (operators, in the admin), never to tenants: they
# can name hosts, buckets, paths and internals.
COMPUTE_QUOTA_EXCEEDED = "compute_quota_exceeded"
TENANT_SUSPENDED = "tenant_suspended"
# An attempt presumed dead (its job requeued to a newer attempt) that is in fact alive: it must stop, or two runs
# train one job (and, for a private job, two noisy trajectories would be released under one plan's epsilon).
SUPERSEDED = "superseded"
ERROR_MESSAGES = {
    "training_failed": "Training failed. The platform's operators have the details.",
    "invalid_data": "The dataset could not be read for training. Check its format and values.",
    "out_of_memory": "Training ran out of memory. Try a smaller batch_size, embedding or vocabulary.",
    "storage_unavailable": "Storage or the database was unavailable on every attempt. Retry the job later.",
    "worker_lost": "The worker running the job stopped responding on every attempt.",
    COMPUTE_QUOTA_EXCEEDED: (
        "Stopped: the job's runtime budget (max_runtime_seconds) or the plan's monthly compute quota is used up. "
        "Its last checkpoint is kept; a retry after the plan changes resumes from it."
    ),
    TENANT_SUSPENDED: "Stopped: the tenant is suspended. Its last checkpoint is kept.",
    SUPERSEDED: "Stopped: a newer attempt runs this job.",
}
STOP_CODES = (COMPUTE_QUOTA_EXCEEDED, TENANT_SUSPENDED, SUPERSEDED)
# Tasks are sent by name (``core.queue``): ``training.tasks`` imports this module, never the reverse.
DISPATCH_JOBS = "training.tasks.dispatch_jobs"
TRAIN_MODEL = "training.tasks.train_model"


# --- submission -------------------------------------------------------------------------


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
    classes = _label_classes(dataset, label_column)
    if classes < 2:
        raise ServiceError(f"The label {label_column!r} has fewer than two classes.", code="single_class_label")
    if spec.task == "binary" and classes != 2:
        raise ServiceError(
            f"{template.name} is a binary model; {label_column!r} has {classes} classes.", code="not_binary_label"
        )
    return list(feature_columns)


def _label_classes(dataset: Dataset, label_column: str) -> int:
    classes = len((dataset.stats or {}).get("label_distribution") or {})
    if dataset.label_column != label_column:
        classes = ((dataset.stats or {}).get("columns", {}).get(label_column, {}) or {}).get("distinct", 0)
    return int(classes)


def _gib(size: int) -> str:
    return f"{size / 1024**3:.1f} GiB"


def estimate_job_memory(
    *,
    template: Template,
    params: dict[str, Any],
    dataset: Dataset,
    feature_columns: list[str],
    label_column: str,
    private: bool = False,
) -> int:
    """Bytes the job's model needs while training: parameters with gradients and Adam's state, plus one batch's
    activations, from the template, the params and the dataset's profile (vocabulary from its largest id, capped;
    categories per column; label classes). A private job (DP-SGD) also keeps one gradient per example of a chunk
    of the batch (``training.privacy.per_example_gradient_bytes``, the trainer's own chunking)."""
    column_stats = (dataset.stats or {}).get("columns", {})
    types = _schema_types(dataset)
    columns = {name: {"type": types.get(name)} | (column_stats.get(name) or {}) for name in feature_columns}
    estimate, size = template.estimate_memory(
        params, columns=columns, classes=max(2, _label_classes(dataset, label_column))
    )
    if private:
        size += dp.per_example_gradient_bytes(parameters=estimate.parameters, batch_size=int(params["batch_size"]))
    return size


def _check_memory(*, tenant: Tenant, size: int, private: bool = False) -> None:
    limit = tenant.plan.max_job_memory_bytes
    if size > limit:
        parts = "parameters, optimizer state, one batch of activations" + (
            " and one gradient per example of a chunk of the batch (private training)" if private else ""
        )
        raise ServiceError(
            f"This job needs about {_gib(size)} of memory ({parts}); the plan allows {_gib(limit)} ({limit} bytes) "
            "per job. Reduce embedding_dim, vocab_size, max_tokens, hidden_units or batch_size.",
            code="job_memory_exceeded",
            details={"estimated_memory_bytes": size, "max_job_memory_bytes": limit},
        )


def _reserve_runtime(*, tenant: Tenant, requested: int | None) -> int:
    """The job's runtime budget, reserved against the month's compute quota (call inside the job's transaction).

    The tenant's row is locked first, so concurrent submissions reserve one after another and cannot together
    promise more than the quota.
    """
    tenant_services.lock_tenant(tenant_id=tenant.pk)
    quota = tenant.plan.compute_seconds_per_month
    remaining = int(selectors.compute_seconds_remaining(tenant=tenant))
    details = {"compute_seconds_per_month": quota, "compute_seconds_available": max(0, remaining)}
    if remaining < 1:
        raise QuotaExceededError(
            f"This month's {quota} compute seconds are spent or reserved by queued and running jobs.",
            code=COMPUTE_QUOTA_EXCEEDED,
            details=details,
        )
    budget = min(settings.TRAINING_DEFAULT_MAX_RUNTIME_SECONDS, remaining) if requested is None else requested
    if budget > remaining:
        raise QuotaExceededError(
            f"max_runtime_seconds={requested} is more than the {remaining} compute seconds left this month "
            "(after what queued and running jobs have reserved).",
            code=COMPUTE_QUOTA_EXCEEDED,
            details=details | {"max_runtime_seconds": requested},
        )
    # Ran and reserved (this job's budget included): what new submissions see as used.
    events.quota_nearly_used(
        tenant=tenant,
        quota="compute_seconds_per_month",
        used=quota - remaining + budget,
        limit=quota,
        period=selectors.month_start().strftime("%Y-%m"),
    )
    return budget


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
    max_runtime_seconds: int | None = None,
    privacy: dict[str, Any] | None = None,
) -> TrainingJob:
    """Check everything a worker would trip over, then queue the job (dispatch follows the commit).

    The job's memory is estimated and held to the plan's per-job limit, and its runtime budget
    (``max_runtime_seconds``, else the default, at most what is left of the month's quota) is reserved.
    A ``privacy`` request (``training.privacy``) is resolved into the job's DP plan, and held to the dataset's
    privacy budget under a lock on the dataset's row, so two submissions at once cannot both spend its last share.

    Two parts: the checks and the DP plan (seconds of accounting at worst, memoized on public numbers) run
    outside any transaction, so no lock is held while they run; then ``_queue_job`` locks, composes the budget
    (memoized too), reserves the runtime and creates the job in one short transaction.
    """
    chosen = TEMPLATES.get(template)
    if chosen is None:
        raise ServiceError(
            f"Unknown template {template!r}.", code="unknown_template", details={"templates": sorted(TEMPLATES)}
        )
    if not naming.is_model_name(model_name):
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
    if max_runtime_seconds is not None and not 1 <= max_runtime_seconds <= settings.TRAINING_TIME_LIMIT_SECONDS:
        raise ServiceError(
            f"max_runtime_seconds is between 1 and {settings.TRAINING_TIME_LIMIT_SECONDS}.",
            code="invalid_max_runtime_seconds",
        )
    private = privacy is not None
    if private:
        dp.validate_request(privacy)  # shape and types before any other work
    memory = estimate_job_memory(
        template=chosen,
        params=resolved,
        dataset=dataset,
        feature_columns=columns,
        label_column=label_column,
        private=private,
    )
    _check_memory(tenant=tenant, size=memory, private=private)
    plan = (
        dp.plan(
            request=privacy,
            row_count=dataset.row_count,
            validation_split=validation_split,
            batch_size=int(resolved["batch_size"]),
            epochs=int(resolved["epochs"]),
        )
        if private
        else {}
    )
    return _queue_job(
        tenant=tenant,
        dataset=dataset,
        template=template,
        model_name=model_name,
        params=resolved,
        label_column=label_column,
        feature_columns=columns,
        validation_split=validation_split,
        seed=seed,
        max_runtime_seconds=max_runtime_seconds,
        memory=memory,
        plan=plan,
    )


@transaction.atomic
def _queue_job(
    *,
    tenant: Tenant,
    dataset: Dataset,
    template: str,
    model_name: str,
    params: dict[str, Any],
    label_column: str,
    feature_columns: list[str],
    validation_split: float,
    seed: int,
    max_runtime_seconds: int | None,
    memory: int,
    plan: dict[str, Any],
) -> TrainingJob:
    """``create_job``'s transaction: the budget check (the dataset's row locked when it has a budget), the
    runtime reservation (the tenant's row locked), the job's row, its log and audit, and dispatch on commit."""
    _check_privacy_budget(dataset=dataset, plan=plan)  # may lock the dataset's row, then the tenant's below
    budget = _reserve_runtime(tenant=tenant, requested=max_runtime_seconds)
    job = TrainingJob.objects.create(
        tenant=tenant,
        dataset=dataset,
        template=template,
        model_name=model_name,
        params=params,
        label_column=label_column,
        feature_columns=feature_columns,
        validation_split=validation_split,
        seed=seed,
        max_attempts=settings.TRAINING_MAX_ATTEMPTS,
        max_runtime_seconds=budget,
        estimated_memory_bytes=memory,
        privacy=plan,
    )
    log(job, f"queued: {template} on dataset {dataset.name} v{dataset.version}")
    if plan:
        log(
            job,
            f"private: epsilon {plan['epsilon']:.4g} at delta {plan['delta']:.3g} ({plan['accountant']}), "
            f"noise_multiplier {plan['noise_multiplier']:.4g}, clip_norm {plan['clip_norm']:g}, "
            f"sample_rate {plan['sample_rate']:.4g}, {plan['steps']} steps",
        )
        if plan.get("warning"):
            log(job, f"warning: {plan['warning']}")
    audit.record(
        tenant=tenant,
        action="job.create",
        target=job,
        details={
            "template": template,
            "model_name": model_name,
            "dataset": str(dataset.id),
            "max_runtime_seconds": budget,
        }
        | ({"privacy": {k: plan[k] for k in ("epsilon", "delta", "accountant", "noise_multiplier")}} if plan else {}),
    )
    transaction.on_commit(request_dispatch)
    return job


# --- differential privacy budgets --------------------------------------------------------


def _check_privacy_budget(*, dataset: Dataset, plan: dict[str, Any]) -> None:
    """Hold a job about to be queued to its dataset's privacy budget (call inside the job's transaction).

    A dataset without a budget (the common case) is read without an exclusive lock: on PostgreSQL its row is
    taken ``FOR KEY SHARE``, which concurrent submissions share, but which keeps ``set_privacy_budget`` (``FOR
    UPDATE``) waiting until this job is committed, so it sees the job (and refuses a budget over a plain job). With
    a budget, the row is locked ``FOR UPDATE`` and the budget read again, so concurrent submissions are checked one
    after another, each seeing the jobs the others created. With a budget, only private jobs may read the rows.
    """
    found = list(Dataset.objects.filter(pk=dataset.pk).values_list("privacy_budget_epsilon", flat=True))
    if not found:
        raise ServiceError("No such dataset.", code="unknown_dataset", details={"dataset": str(dataset.pk)})
    if found[0] is None:
        if _budget_under_share_lock(dataset_pk=dataset.pk) is None:
            return
        # Set between the two reads; this transaction already shares the row, so it does not wait for the
        # exclusive lock (two submissions doing so would deadlock): the client submits again.
        raise ConflictError(
            "The dataset's privacy budget was set while the job was submitted; submit it again.",
            code="privacy_budget_changed",
        )
    locked = Dataset.objects.select_for_update(of=("self",)).get(pk=dataset.pk)
    _hold_to_budget(dataset=locked, plan=plan)


def _budget_under_share_lock(*, dataset_pk) -> float | None:
    """The dataset's budget epsilon read under PostgreSQL's ``FOR KEY SHARE`` (shared by readers, in conflict
    only with ``FOR UPDATE``); elsewhere (SQLite's IMMEDIATE transactions serialize every writer) a plain read."""
    if connection.vendor != "postgresql":
        return Dataset.objects.filter(pk=dataset_pk).values_list("privacy_budget_epsilon", flat=True).first()
    meta = Dataset._meta
    table, pk_column = connection.ops.quote_name(meta.db_table), connection.ops.quote_name(meta.pk.column)
    column = connection.ops.quote_name(meta.get_field("privacy_budget_epsilon").column)
    query = f"SELECT {column} FROM {table} WHERE {pk_column} = %s FOR KEY SHARE"  # noqa: S608 (the model's names)
    with connection.cursor() as cursor:
        cursor.execute(query, [dataset_pk])
        row = cursor.fetchone()
    return None if row is None else row[0]


def _hold_to_budget(*, dataset: Dataset, plan: dict[str, Any]) -> None:
    """Refuse ``plan`` (``{}``: a plain job) on ``dataset``, whose row the caller has locked ``FOR UPDATE``,
    when its budget is set and the job does not fit: ``privacy_required`` or ``privacy_budget_exceeded``."""
    if dataset.privacy_budget_epsilon is None:
        return
    budget, delta = dataset.privacy_budget_epsilon, dataset.privacy_budget_delta
    if not plan:
        raise ServiceError(
            f"The dataset has a privacy budget (epsilon {budget:g} at delta {delta:g}): every job on it must be "
            "private. Add a privacy object.",
            code="privacy_required",
            details={"budget_epsilon": budget, "budget_delta": delta},
        )
    after = selectors.privacy_spent(dataset=dataset, delta=delta, extra_plan=plan)
    spent = after["epsilon"]
    if after["epsilon_after"] > budget:
        needed = after["epsilon_after"] - spent
        remaining = max(0.0, budget - spent)
        raise ServiceError(
            f"This job would spend epsilon {needed:.3g} of the dataset's privacy budget; {remaining:.3g} of "
            f"{budget:g} (at delta {delta:g}) is left. Ask for a smaller target_epsilon, or raise the budget.",
            code="privacy_budget_exceeded",
            details={
                "budget_epsilon": budget,
                "budget_delta": delta,
                "spent_epsilon": spent,
                "remaining_epsilon": remaining,
                "needed_epsilon": needed,
                "epsilon_after": after["epsilon_after"],
                "accountant": after["accountant"],
            },
        )


def _budget_number(name: str, value: Any, low: float, high: float, *, high_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ServiceError(f"{name} must be a number or null.", code="invalid_privacy_budget", details={name: value})
    if isinstance(value, float) and not math.isfinite(value):
        raise ServiceError(f"{name} must be finite.", code="invalid_privacy_budget", details={name: str(value)})
    if not (low < value and (value < high if high_open else value <= high)):
        interval = f"({low:g}, {high:g}{')' if high_open else ']'}"
        raise ServiceError(
            f"{name} must be in {interval}.", code="invalid_privacy_budget", details={name: float(value)}
        )
    return float(value)


@transaction.atomic
def set_privacy_budget(*, tenant: Tenant, dataset_id, epsilon: Any, delta: Any) -> dict[str, Any]:
    """Set (both numbers) or clear (both null) a dataset's privacy budget; it cannot go below what its counted
    private jobs have spent at the new delta, nor be set while non-private jobs have read the rows or are queued
    to (409 ``privacy_budget_compromised``, listing them: the budget would read as a guarantee it is not). Audited.
    Returns the budget as ``selectors.privacy_budget`` shows it.
    """
    dataset = Dataset.objects.for_tenant(tenant).select_for_update(of=("self",)).filter(pk=dataset_id).first()
    if dataset is None:
        raise NotFoundError("No such dataset.")
    if (epsilon is None) != (delta is None):
        raise ServiceError(
            "Give both epsilon and delta to set a budget, or both null to clear it.",
            code="invalid_privacy_budget",
            details={"epsilon": epsilon is not None, "delta": delta is not None},
        )
    if epsilon is not None:
        epsilon = _budget_number("epsilon", epsilon, 0.0, dp.MAX_EPSILON, high_open=False)
        rows = dataset.row_count or 1
        delta = _budget_number("delta", delta, 0.0, 1.0 / rows, high_open=True)
        if delta < dp.MIN_DELTA:
            raise ServiceError(
                f"delta must be at least {dp.MIN_DELTA:g}.", code="invalid_privacy_budget", details={"delta": delta}
            )
        plain = list(selectors.plain_jobs_reading(dataset=dataset).values("id", "status", "model_name")[:21])
        if plain:
            raise ConflictError(
                "Non-private jobs have read this dataset or are queued to: a privacy budget would not bound what "
                "was learnt from its rows. Cancel the queued ones; a dataset already used without privacy needs a "
                "new upload to carry a budget.",
                code="privacy_budget_compromised",
                details={
                    "jobs": [
                        {"job": str(job["id"]), "status": job["status"], "model_name": job["model_name"]}
                        for job in plain[:20]
                    ],
                    "more": len(plain) > 20,
                },
            )
        spent = selectors.privacy_spent(dataset=dataset, delta=delta)["epsilon"]
        if spent > epsilon:
            raise ServiceError(
                f"The dataset's private jobs have already spent epsilon {spent:.4g} at delta {delta:g}; the budget "
                "cannot be below that.",
                code="privacy_budget_below_spent",
                details={"spent_epsilon": spent, "epsilon": epsilon, "delta": delta},
            )
    before = {"epsilon": dataset.privacy_budget_epsilon, "delta": dataset.privacy_budget_delta}
    dataset.privacy_budget_epsilon, dataset.privacy_budget_delta = epsilon, delta
    dataset.save(update_fields=["privacy_budget_epsilon", "privacy_budget_delta"])
    audit.record(
        tenant=tenant,
        action="dataset.privacy_budget_set" if epsilon is not None else "dataset.privacy_budget_cleared",
        target=dataset,
        details={"before": before, "epsilon": epsilon, "delta": delta},
    )
    return selectors.privacy_budget(dataset=dataset)


# --- fair dispatch -----------------------------------------------------------------------


def request_dispatch() -> None:
    """Ask a worker to dispatch now; when the broker is down, beat's periodic dispatch sends the jobs later.

    Called after commits (a job created, finished or requeued): the change is
    already saved, so a broker outage must not turn it into an error.
    """
    try:
        queue.send(DISPATCH_JOBS)
    except (BrokerError, OSError) as exc:
        logger.warning("dispatch request not sent (broker unavailable: %s); the periodic dispatch will send it", exc)


def dispatch_queued_jobs() -> list[str]:
    """Send queued jobs to the gpu queue, fairly across tenants and within each plan's concurrency and budget.

    A tenant's jobs in flight (dispatched, running or cancelling) never exceed
    its plan's ``max_concurrent_jobs``; the rest wait ``queued``. Tenants take
    turns (fewest in flight first, then the longest waiting), so one tenant's
    fifty jobs never sit in front of another tenant's first. A conditional
    update claims each job, so concurrent dispatchers cannot send one twice.

    Spending is checked here, before a worker is taken: a suspended tenant's
    jobs stay queued (they go once it is active again); a job whose own budget
    is used, or whose tenant has spent the month's compute, fails with
    ``compute_quota_exceeded`` (waiting for next month would hold a reservation
    nobody sees; a retry after a plan change resumes from the checkpoint); a job
    whose budget does not fit beside what the tenant's jobs in flight may still
    use waits for them.
    """
    in_flight: dict[Any, int] = defaultdict(int)
    in_flight_budget: dict[Any, float] = defaultdict(float)
    for row in selectors.jobs_in_flight().values("tenant_id", "max_runtime_seconds", "compute_seconds"):
        in_flight[row["tenant_id"]] += 1
        in_flight_budget[row["tenant_id"]] += selectors.unused_budget(
            max_runtime_seconds=row["max_runtime_seconds"], compute_seconds=row["compute_seconds"]
        )
    waiting: dict[Any, list[TrainingJob]] = defaultdict(list)
    # Candidates: each active tenant's oldest queued jobs, at most its plan's concurrency of them. A tenant with
    # thousands of old jobs (or a suspended one) then cannot fill the batch and keep everyone else's jobs out.
    per_tenant_rank = Window(RowNumber(), partition_by=[F("tenant_id")], order_by=[F("created_at").asc(), F("id")])
    for job in (
        TrainingJob.objects.filter(
            status=Status.QUEUED, dispatched_at__isnull=True, tenant__status=Tenant.Status.ACTIVE
        )
        .annotate(rank_in_tenant=per_tenant_rank)
        .filter(rank_in_tenant__lte=F("tenant__plan__max_concurrent_jobs"))
        .select_related("tenant__plan")
        .order_by("created_at")[: settings.TRAINING_DISPATCH_BATCH]
    ):
        waiting[job.tenant_id].append(job)
    used = {
        tenant_id: selectors.compute_seconds_this_month(tenant=jobs[0].tenant)
        for tenant_id, jobs in waiting.items()
        if jobs[0].tenant.is_active
    }

    sent: list[str] = []
    while waiting:
        turn = sorted(waiting, key=lambda t: (in_flight[t], waiting[t][0].created_at))
        progressed = False
        for tenant_id in turn:
            job = waiting[tenant_id][0]
            tenant = job.tenant
            if not tenant.is_active or in_flight[tenant_id] >= tenant.plan.max_concurrent_jobs:
                del waiting[tenant_id]  # suspended: its jobs stay queued; at its limit: they wait for a slot
                continue
            budget = selectors.unused_budget(
                max_runtime_seconds=job.max_runtime_seconds, compute_seconds=job.compute_seconds
            )
            quota = tenant.plan.compute_seconds_per_month
            if used[tenant_id] >= quota:  # the month is spent: none of the tenant's queued jobs may start
                _fail_queued(TrainingJob.objects.for_tenant(tenant), code=COMPUTE_QUOTA_EXCEEDED)
                del waiting[tenant_id]
                progressed = True
                continue
            spent = job.max_runtime_seconds is not None and budget <= 0
            if not spent and in_flight[tenant_id] and used[tenant_id] + in_flight_budget[tenant_id] + budget > quota:
                del waiting[tenant_id]  # does not fit beside what is running: wait for it to finish
                continue
            waiting[tenant_id].pop(0)
            if not waiting[tenant_id]:
                del waiting[tenant_id]
            if spent:
                _fail_queued(TrainingJob.objects.filter(pk=job.pk), code=COMPUTE_QUOTA_EXCEEDED)
                progressed = True
                continue
            if _claim_for_dispatch(job):
                in_flight[tenant_id] += 1
                in_flight_budget[tenant_id] += budget
                sent.append(str(job.pk))
                progressed = True
        if not progressed:
            break
    for job_id in sent:
        queue.send(TRAIN_MODEL, job_id=job_id)
    return sent


def _claim_for_dispatch(job: TrainingJob) -> bool:
    """Mark one queued job dispatched, under a lock on its tenant's row with the tenant's jobs in flight counted
    again: two dispatchers at once (beat and a worker) cannot together send past the plan's concurrency, nor
    send a job of a tenant suspended since the candidates were read."""
    with transaction.atomic():
        tenant = tenant_services.lock_tenant(tenant_id=job.tenant_id)
        if not tenant.is_active or selectors.jobs_in_flight(tenant=tenant).count() >= tenant.plan.max_concurrent_jobs:
            return False
        return bool(
            TrainingJob.objects.filter(pk=job.pk, status=Status.QUEUED, dispatched_at__isnull=True).update(
                dispatched_at=timezone.now()
            )
        )


def _fail_queued(jobs, *, code: str) -> None:
    """Queued jobs that must not start end failed with ``code`` (those someone else took meanwhile are left)."""
    pending = list(jobs.filter(status=Status.QUEUED, dispatched_at__isnull=True).values_list("pk", "tenant_id"))
    failed = TrainingJob.objects.filter(
        pk__in=[pk for pk, _ in pending], status=Status.QUEUED, dispatched_at__isnull=True
    ).update(status=Status.FAILED, finished_at=timezone.now(), error_code=code, error_message=ERROR_MESSAGES[code])
    if failed:
        message = f"failed before it started: {ERROR_MESSAGES[code]}"[:LOG_LINE_MAX]
        JobLogLine.objects.bulk_create(
            JobLogLine(tenant_id=tenant_id, job_id=pk, message=message) for pk, tenant_id in pending
        )
        for job in TrainingJob.objects.filter(pk__in=[pk for pk, _ in pending], status=Status.FAILED, error_code=code):
            _emit_finished(job, status=Status.FAILED, error_code=code)


# --- cancellation ------------------------------------------------------------------------


def cancel_job(*, tenant: Tenant, job_id) -> TrainingJob:
    """A queued job is cancelled at once; a running one is asked to stop at its next batch."""
    now = timezone.now()
    with transaction.atomic():
        job = TrainingJob.objects.for_tenant(tenant).select_for_update().filter(pk=job_id).first()
        if job is None:
            raise NotFoundError("No such job.")
        if job.status in TrainingJob.TERMINAL:
            raise ConflictError(f"The job already ended ({job.status}).", code="job_finished")
        if job.status == Status.QUEUED:
            job.status, job.finished_at = Status.CANCELLED, now
            log(job, "cancelled before it started")
            _emit_finished(job, status=Status.CANCELLED)
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
    """Mark a job running for this worker (a new attempt row), or None when it must not run here.

    Safe against redelivered and duplicate messages: a job runs only when it
    was dispatched and not yet started, or when it was running but its
    heartbeat stopped (its worker died; that attempt is closed and charged up
    to its last heartbeat). Each start counts an attempt. Spending is checked
    again here, when the worker is about to start: a suspended tenant's job
    goes back to the queue without running (and without using an attempt); a
    job without budget left fails with ``compute_quota_exceeded``.
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
        if job.status == Status.RUNNING:
            _close_lost_attempt(job)
            job.refresh_from_db(fields=["compute_seconds"])
        tenant = Tenant.objects.select_related("plan").get(pk=job.tenant_id)
        if not tenant.is_active:
            job.status, job.dispatched_at = Status.QUEUED, None
            job.save(update_fields=["status", "dispatched_at"])
            log(job, "not started: the tenant is suspended; the job waits in the queue")
            return None
        if _out_of_budget(job, tenant):
            _fail(job, ERROR_MESSAGES[COMPUTE_QUOTA_EXCEEDED], "", code=COMPUTE_QUOTA_EXCEEDED)
            return None
        if job.attempts >= job.max_attempts:
            _fail(job, ERROR_MESSAGES["worker_lost"], f"gave up after {job.attempts} attempts", code="worker_lost")
            return None
        job.status = Status.RUNNING
        job.attempts += 1
        job.worker = worker[:200]
        job.started_at = job.started_at or now
        job.heartbeat_at = now
        job.save(update_fields=["status", "attempts", "worker", "started_at", "heartbeat_at"])
        JobAttempt.objects.create(
            tenant_id=job.tenant_id, job=job, number=job.attempts, worker=job.worker, started_at=now, heartbeat_at=now
        )
    job.refresh_from_db()
    log(job, f"attempt {job.attempts} started")  # the worker's host stays in job.worker (operators)
    return job


def _out_of_budget(job: TrainingJob, tenant: Tenant) -> bool:
    """The job used its runtime budget, or the tenant its month's compute."""
    if job.max_runtime_seconds is not None and job.compute_seconds >= job.max_runtime_seconds:
        return True
    return selectors.compute_seconds_this_month(tenant=tenant) >= tenant.plan.compute_seconds_per_month


def _attempt_row(job: TrainingJob):
    """This attempt's own row (by number: whoever owns the job now, an attempt's seconds are its own)."""
    return JobAttempt.objects.filter(job_id=job.pk, number=job.attempts)


def _recompute_compute_seconds(job_id) -> None:
    """The job's compute seconds are the sum of its attempts' (set in one statement, never incremented)."""
    total = JobAttempt.objects.filter(job=OuterRef("pk")).values("job").annotate(total=Sum("compute_seconds"))
    TrainingJob.objects.filter(pk=job_id).update(compute_seconds=Coalesce(Subquery(total.values("total")), Value(0.0)))


def _charge_attempt(job: TrainingJob, *, at, seconds: float | None = None, ended: bool = False, **fields) -> None:
    """Set (never add) the attempt's compute seconds: ``seconds``, else its time from start to ``at``.

    Written by attempt number, so the same write made twice (a retry after a lost connection) counts once.
    """
    attempt = _attempt_row(job).first()
    if attempt is None:
        return
    if seconds is None:
        seconds = max(0.0, (at - attempt.started_at).total_seconds())
    updates = {"heartbeat_at": at, "compute_seconds": seconds, **fields}
    if ended:
        updates["ended_at"] = at
    _attempt_row(job).update(**updates)
    _recompute_compute_seconds(job.pk)


def _close_lost_attempt(job: TrainingJob, outcome: str = "lost") -> None:
    """A killed attempt (no worker will report for it) is charged from its start to its last heartbeat."""
    attempt = _attempt_row(job).filter(ended_at__isnull=True).first()
    if attempt is None:
        return
    last = attempt.heartbeat_at or attempt.started_at
    _charge_attempt(
        job, at=last, seconds=max(0.0, (last - attempt.started_at).total_seconds()), ended=True, outcome=outcome
    )


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


def heartbeat(*, job: TrainingJob, progress: dict[str, Any]) -> str:
    """Record progress and liveness, and charge the attempt up to now; tells the trainer whether to go on.

    Returns the job's status (``cancelling`` when the tenant cancelled it), or a
    stop code: ``compute_quota_exceeded`` once the job has used its runtime
    budget or the tenant the month's compute, ``tenant_suspended`` once the
    tenant is suspended, ``superseded`` once a newer attempt has claimed the job (this
    one was presumed dead). The trainer then stops, keeping its last checkpoint.
    """
    now = timezone.now()
    with transaction.atomic():
        owned = _attempt(job).filter(status__in=[Status.RUNNING, Status.CANCELLING])
        if not owned.update(heartbeat_at=now, progress=progress):
            if superseded(job=job):
                return SUPERSEDED
            return TrainingJob.objects.filter(pk=job.pk).values_list("status", flat=True).first() or Status.FAILED
        _charge_attempt(job, at=now)
    return stop_reason(job=job)


def stop_reason(*, job: TrainingJob) -> str:
    """The job's status, or why it must stop now (see ``heartbeat``)."""
    current = TrainingJob.objects.select_related("tenant__plan").get(pk=job.pk)
    if current.status != Status.RUNNING:
        return current.status
    if not current.tenant.is_active:
        return TENANT_SUSPENDED
    if _out_of_budget(current, current.tenant):
        return COMPUTE_QUOTA_EXCEEDED
    return current.status


def record_device(*, job: TrainingJob, device: str) -> None:
    """The device of this attempt (so a killed attempt is billed as GPU or CPU time too)."""
    _attempt_row(job).update(device=device)


def superseded(*, job: TrainingJob) -> bool:
    """Whether a newer attempt has claimed the job since this one (checked before a checkpoint is written): this
    attempt was presumed dead and must stop. A job merely requeued, not yet claimed again, is not superseded."""
    claimed = TrainingJob.objects.filter(pk=job.pk).values_list("worker", "attempts").first()
    return claimed is not None and claimed != (job.worker, job.attempts)


def keep_alive(*, job: TrainingJob) -> bool:
    """A heartbeat that leaves the progress as it is (a worker waiting out an outage); False once the job is no
    longer this attempt's to run (requeued meanwhile, or cancelled).

    The attempt's row is left alone: waiting out the platform's outage is not charged to the tenant (a worker
    killed meanwhile is charged up to its last training heartbeat)."""
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


def _emit_finished(
    job: TrainingJob,
    *,
    status: str,
    error_code: str = "",
    metrics: dict | None = None,
    model_version: int | None = None,
) -> None:
    """``job.finished`` to the tenant's webhooks, in the transaction that ends the job (scalar metrics only)."""
    scalars = events.scalar_values(metrics)
    events.emit(
        tenant=job.tenant_id,
        event_type="job.finished",
        data={
            "job": str(job.pk),
            "status": status,
            "model_name": job.model_name,
            "template": job.template,
            "model_version": model_version,
            "error_code": error_code or None,
            "metrics": scalars,
        },
        once_key=f"{job.pk}:{job.attempts}",
    )


def finish_job(
    *,
    job: TrainingJob,
    status: str,
    compute_seconds: float,
    device: str,
    metrics: dict | None = None,
    model_version: int | None = None,
    error_code: str = "",
    error: str = "",
    traceback_text: str = "",
) -> None:
    """End the attempt and, while the attempt still owns it, the job.

    ``compute_seconds`` are this attempt's, set on its row (not added), so a
    retried write counts once; the job's seconds are recomputed from its
    attempts. ``error`` is what tenants see (a fixed message for
    ``error_code``); ``traceback_text`` is for operators only.
    """
    now = timezone.now()
    with transaction.atomic():
        _charge_attempt(job, at=now, seconds=compute_seconds, ended=True, device=device)
        owned = _attempt(job).update(
            status=status,
            finished_at=now,
            heartbeat_at=now,
            device=device,
            metrics=metrics or {},
            model_version=model_version,
            error_code=error_code,
            error_message=error[:1000],
            error_traceback=traceback_text,
        )
        if not owned:
            logger.warning(
                "job %s: attempt %s no longer owns it; its result (%s) is dropped", job.pk, job.attempts, status
            )
            return
        _attempt_row(job).update(outcome=error_code or status)
        log(job, f"{status}" + (f": {error}" if error else ""))
        _emit_finished(job, status=status, error_code=error_code, metrics=metrics, model_version=model_version)
    transaction.on_commit(request_dispatch)


def _attempt(job: TrainingJob):
    """The job's row while this attempt still owns it: a newer attempt (after this worker was presumed dead and
    the job requeued) owns it instead, and an old attempt's late writes must change nothing."""
    return TrainingJob.objects.filter(pk=job.pk, worker=job.worker, attempts=job.attempts)


def record_attempt_seconds(*, job: TrainingJob, seconds: float) -> None:
    """Set this attempt's compute seconds (idempotent; see ``finish_job``)."""
    _charge_attempt(job, at=timezone.now(), seconds=seconds)


def _fail(job: TrainingJob, message: str, traceback_text: str, *, code: str) -> None:
    job.status, job.finished_at = Status.FAILED, timezone.now()
    job.error_code, job.error_message, job.error_traceback = code, message[:1000], traceback_text
    job.save(update_fields=["status", "finished_at", "error_code", "error_message", "error_traceback"])
    log(job, f"failed: {message}")
    _emit_finished(job, status=Status.FAILED, error_code=code)


def requeue_stale_jobs() -> list[str]:
    """Jobs whose worker stopped beating are sent again (resuming from their checkpoint) or failed.

    The silent attempt is closed and charged up to its last heartbeat.
    """
    stale_before = timezone.now() - timedelta(seconds=settings.TRAINING_HEARTBEAT_TIMEOUT_SECONDS)
    requeued = []
    for job in TrainingJob.objects.filter(
        status__in=[Status.RUNNING, Status.CANCELLING], heartbeat_at__lt=stale_before
    ):
        with transaction.atomic():
            locked = TrainingJob.objects.select_for_update().filter(pk=job.pk, heartbeat_at__lt=stale_before).first()
            if locked is None:
                continue
            _close_lost_attempt(locked)
            if locked.status == Status.CANCELLING:
                locked.status, locked.finished_at = Status.CANCELLED, timezone.now()
                locked.save(update_fields=["status", "finished_at"])
                log(locked, "cancelled (its worker stopped)")
                _emit_finished(locked, status=Status.CANCELLED)
            elif locked.attempts >= locked.max_attempts:
                _fail(
                    locked,
                    ERROR_MESSAGES["worker_lost"],
                    f"the worker stopped responding {locked.attempts} times",
                    code="worker_lost",
                )
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


def requeue_after_error(*, job: TrainingJob, reason: str, compute_seconds: float | None = None) -> None:
    """Send a job back to the queue after a transient error; it resumes from its checkpoint.

    ``reason`` is shown to the tenant in the job's log: a plain sentence, not the exception text.
    """
    with transaction.atomic():
        if compute_seconds is not None:
            _charge_attempt(job, at=timezone.now(), seconds=compute_seconds, ended=True, outcome="requeued")
        if _attempt(job).filter(status=Status.RUNNING).update(status=Status.QUEUED, dispatched_at=None):
            log(job, f"transient error, will resume: {reason}")
            transaction.on_commit(request_dispatch)


@dataclass(frozen=True)
class Retried:
    """What an operators' retry did: how many jobs went back to the queue, and why the others did not (by job
    id: the refusal's code and message, shown to the operator)."""

    requeued: int
    refused: dict[str, str] = field(default_factory=dict)


@transaction.atomic
def retry_jobs(*, job_ids: list) -> Retried:
    """Operators' retry: failed or cancelled jobs go back to the queue with a fresh attempt budget.

    Attempt numbers go on (each attempt keeps its row and its compute seconds); the job's runtime budget grows by
    the default budget, as far as the tenant's month has room (else the dispatcher ends it with
    ``compute_quota_exceeded`` again). A job that would count anew toward its dataset's privacy budget (a private
    job that never started gave its share back; a plain job on a dataset that has a budget now) is checked
    against the budget under the dataset's lock, as at submission, and refused when it no longer fits.
    """
    locked = list(
        TrainingJob.objects.select_for_update(of=("self",))
        .filter(pk__in=job_ids, status__in=[Status.FAILED, Status.CANCELLED])
        .select_related("tenant__plan")
        .order_by("created_at", "id")
    )
    room: dict[Any, float] = {}
    requeued = 0
    refused: dict[str, str] = {}
    for job in locked:
        refusal = _retry_refusal(job)
        if refusal is not None:
            refused[str(job.pk)] = refusal
            continue
        audit.record(tenant=job.tenant_id, action="job.retry", target=("trainingjob", job.pk))
        if job.tenant_id not in room:
            room[job.tenant_id] = selectors.compute_seconds_remaining(tenant=job.tenant)
        extra = int(max(0.0, min(settings.TRAINING_DEFAULT_MAX_RUNTIME_SECONDS, room[job.tenant_id])))
        room[job.tenant_id] -= extra
        TrainingJob.objects.filter(pk=job.pk).update(
            status=Status.QUEUED,
            dispatched_at=None,
            finished_at=None,
            cancel_requested_at=None,
            max_attempts=job.attempts + settings.TRAINING_MAX_ATTEMPTS,
            max_runtime_seconds=int(job.compute_seconds) + extra,
            error_code="",
            error_message="",
            error_traceback="",
        )
        requeued += 1
    if requeued:
        transaction.on_commit(request_dispatch)
    return Retried(requeued=requeued, refused=refused)


def _retry_refusal(job: TrainingJob) -> str | None:
    """Why ``job`` may not go back to the queue for its dataset's privacy budget (None: it may).

    A private job that started is counted already (its epsilon stays spent whatever its end); any other job on
    a dataset is held to the budget like a new submission, the dataset's row locked so that concurrent
    submissions and retries are checked one after another (the jobs requeued before it in this retry count).
    """
    if job.dataset_id is None or (job.privacy and job.started_at is not None):
        return None
    dataset = Dataset.objects.select_for_update(of=("self",)).filter(pk=job.dataset_id).first()
    if dataset is None:
        return None
    try:
        _hold_to_budget(dataset=dataset, plan=job.privacy)
    except ServiceError as error:
        return f"{error.code}: {error.message}"
    return None


# --- deletion (operators) ----------------------------------------------------------------


def delete_job(*, tenant: Tenant, job_id) -> None:
    """Delete an ended job's row, then its objects (checkpoints, logs) once that is committed.

    Refused while the job is queued or running (cancel it first), for a private job that started while its
    dataset exists (its epsilon stays spent: deleting the row would give it back to the budget), and while its
    compute time still counts
    toward this month's quota and bill: usage is rolled up from job rows, so deleting one earlier would
    refund the seconds it used. A published version keeps its lineage (job id and dataset in its manifest).
    """
    with transaction.atomic():
        job = TrainingJob.objects.for_tenant(tenant).select_for_update().filter(pk=job_id).first()
        if job is None:
            raise NotFoundError("No such job.")
        if job.status in TrainingJob.ACTIVE:
            raise ConflictError(f"The job is {job.status}; cancel it first.", code="job_active")
        if job.privacy and job.started_at is not None and job.dataset_id is not None:
            raise ConflictError(
                "This private job's epsilon counts toward its dataset's privacy budget (the budget composes the "
                "job rows, and what it learnt stays in any published version); it can be deleted once the dataset "
                "is deleted.",
                code="private_job_in_budget",
                details={"dataset": str(job.dataset_id), "epsilon": job.privacy.get("epsilon")},
            )
        if job.compute_seconds and (job.finished_at is None or job.finished_at >= selectors.month_start()):
            raise ConflictError(
                "The job's compute time counts toward this month's quota and bill; it can be deleted next month.",
                code="job_in_billing_period",
            )
        folder = storage.tenant_key(tenant.id, "jobs", str(job.id)) + "/"
        audit.record(
            tenant=tenant,
            action="job.delete",
            target=job,
            details={"model_name": job.model_name, "status": job.status, "compute_seconds": job.compute_seconds},
        )
        job.delete()
    transaction.on_commit(lambda: storage.delete_prefix(folder))


def refuse_deleting_dataset_in_use(*, dataset: Dataset, **_: Any) -> None:
    """Receiver of ``datasets.signals.deleting``: a dataset a queued or running job reads stays."""
    if selectors.dataset_in_use(dataset=dataset):
        raise ConflictError("A queued or running job uses this dataset.", code="dataset_in_use")
