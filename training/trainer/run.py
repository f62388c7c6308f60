"""One training attempt: claim, load, build or resume, fit with live progress, evaluate, publish.

Runs inside the Celery task on the ``gpu`` queue. TensorFlow is imported
here, inside functions, so importing the task module never loads it.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import math
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

from core import logs, storage
from training import evaluation, privacy, publishing, templates
from training import services as job_services
from training.models import TrainingJob
from training.trainer.data import Rows, TrainingData, load

logger = logging.getLogger(__name__)
HEARTBEAT_EVERY_SECONDS = 2.0
# A validation split up to this many rows is kept in memory after the first epoch (bounded: a larger one streams).
VALIDATION_CACHE_ROWS = 200_000
Status = TrainingJob.Status


class Cancelled(Exception):
    """The tenant cancelled the job while it ran."""


class Stopped(Exception):
    """The platform stopped the job (its budget or the tenant's quota is used up, or the tenant was suspended)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class InvalidData(Exception):
    """The dataset could not be read into training arrays (the cause is chained, for operators)."""


def checkpoint_prefix(job: TrainingJob) -> str:
    return storage.tenant_key(job.tenant_id, "jobs", str(job.id), "checkpoints") + "/"


DATABASE_LOST = (OperationalError, InterfaceError)


def resilient(function, /, *args, **kwargs):
    """A trainer's database write, made again on a new connection when the old one was lost.

    A database restart, a failover or terminated backends kill the worker's
    connection; Django does not reconnect outside a request, so without this
    the next write (an epoch's metrics, a heartbeat) would fail the attempt.
    The writes are idempotent or harmless to repeat (a log line).
    """
    for attempt in range(3):
        try:
            return function(*args, **kwargs)
        except DATABASE_LOST as exc:
            connection.close()
            if attempt == 2:
                raise
            logger.warning("database connection lost (%s); reconnecting", exc)
            time.sleep(0.5 * (attempt + 1))
    return None


def wait_for_dependencies(job: TrainingJob) -> None:
    """Before a transient failure is requeued, wait (beating) until storage and the database answer again.

    Requeued at once, the next attempt would start while the outage lasts and
    fail too, spending every attempt in seconds; waiting here costs one.
    Storage that answers may still fail requests (SeaweedFS answers 500s for
    a moment after a restart), so each attempt also waits a little longer
    first: 2 s after the first, 4 s after the second.
    Gives up after ``TRAINING_OUTAGE_WAIT_SECONDS`` (the job is requeued
    anyway and the periodic tasks take it from there).
    """
    started = time.monotonic()
    deadline = started + settings.TRAINING_OUTAGE_WAIT_SECONDS  # then requeued anyway
    settled = started + min(2.0 * job.attempts, 10.0)
    delay = 1.0
    while time.monotonic() < deadline:
        try:
            if not job_services.keep_alive(job=job):
                return  # requeued to another attempt, or cancelled, meanwhile
            if time.monotonic() >= settled and storage.reachable()[0]:
                return
        except DATABASE_LOST:
            connection.close()
        time.sleep(delay)
        delay = min(delay * 2, 10.0)


def transient(exc: BaseException) -> bool:
    """Errors worth another attempt from the last checkpoint: storage or the database unreachable, or storage
    answering a server error (a 5xx while it restarts or is overloaded), here or anywhere in the exception's
    chain (a reader may wrap the storage error it met)."""
    from botocore.exceptions import ClientError, EndpointConnectionError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (*DATABASE_LOST, EndpointConnectionError, BotoConnectionError, ConnectionError)):
            return True
        if isinstance(exc, ClientError):
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            return status >= 500 or exc.response.get("Error", {}).get("Code") in {"SlowDown", "RequestTimeout"}
        exc = exc.__cause__ or exc.__context__
    return False


def private_module():
    """``training.trainer.private``, imported when a job trains: it imports TensorFlow at module level."""
    from training.trainer import private  # TensorFlow: never loaded by importing this module

    return private


def privacy_plan(job: TrainingJob) -> dict[str, Any]:
    """The job's privacy plan (``TrainingJob.privacy``, resolved when the job was created), ``{}`` for a job that
    is not private."""
    return dict(job.privacy or {})


def run_job(*, job_id: str, worker: str) -> None:
    job = job_services.claim_job(job_id=job_id, worker=job_services.worker_identity(worker))
    if job is None:
        return
    logs.set_tenant(job.tenant_id)  # the job's log lines name its tenant (the task's context ends with it)
    started = time.monotonic()
    device = "cpu"
    try:
        # DP-SGD clips float32 per-example gradients: a private job trains in float32 (no loss scaling to undo).
        mixed = job.params.get("mixed_precision", False) and not privacy_plan(job)
        device = configure_devices(mixed_precision=mixed)
        resilient(job_services.record_device, job=job, device=device)
        resilient(job_services.log, job, f"training on {device}")
        metrics, version = train_and_publish(job)
    except Cancelled:
        resilient(
            job_services.finish_job,
            job=job,
            status=Status.CANCELLED,
            compute_seconds=time.monotonic() - started,
            device=device,
        )
    except Stopped as stop:
        logger.info("job %s stopped: %s", job.id, stop.code)
        resilient(
            job_services.finish_job,
            job=job,
            status=Status.FAILED,
            compute_seconds=time.monotonic() - started,
            device=device,
            error_code=stop.code,
            error=job_services.ERROR_MESSAGES[stop.code],
        )
    except Exception as exc:  # every failure ends the attempt with a recorded reason
        seconds = time.monotonic() - started
        if isinstance(exc, DATABASE_LOST):
            connection.close()  # the next write opens a new one
        if transient(exc) and job.attempts < job.max_attempts:
            logger.warning("job %s: transient error, requeued once storage and database answer: %s", job.id, exc)
            wait_for_dependencies(job)  # the wait is the platform's outage: not charged to the tenant
            if resilient(job_services.finish_if_cancelled, job=job, compute_seconds=seconds, device=device):
                return
            resilient(
                job_services.requeue_after_error,
                job=job,
                reason="storage or the database was unavailable",
                compute_seconds=seconds,
            )
            return
        logger.exception("job %s failed", job.id)
        code = failure_code(exc)
        resilient(
            job_services.finish_job,
            job=job,
            status=Status.FAILED,
            compute_seconds=seconds,
            device=device,
            error_code=code,
            error=job_services.ERROR_MESSAGES[code],
            traceback_text=traceback.format_exc(),
        )
    else:
        resilient(
            job_services.finish_job,
            job=job,
            status=Status.SUCCEEDED,
            compute_seconds=time.monotonic() - started,
            device=device,
            metrics=metrics,
            model_version=version,
        )


def failure_code(exc: BaseException) -> str:
    """The code tenants see for a failure; its text and traceback stay with the operators."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "ResourceExhaustedError":  # tf.errors.*
        return "out_of_memory"
    if isinstance(exc, InvalidData):
        return "invalid_data"
    if transient(exc):
        return "storage_unavailable"
    return "training_failed"


def configure_devices(*, mixed_precision: bool) -> str:
    """Use the GPU when there is one (memory growth on), else the CPU; mixed precision only on GPUs."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        # RuntimeError: already initialised in this process, where the first job set growth.
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
    keras.mixed_precision.set_global_policy("mixed_float16" if gpus and mixed_precision else "float32")
    return "gpu" if gpus else "cpu"


class Phases:
    """Wall-clock seconds per phase, saved on the job (where a run's time went)."""

    def __init__(self, job: TrainingJob) -> None:
        self.job, self.seconds, self.started = job, {}, time.monotonic()

    @contextlib.contextmanager
    def phase(self, name: str):
        start = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.monotonic() - start, 4)
            resilient(job_services.record_timings, job=self.job, timings=self.seconds)


def train_and_publish(job: TrainingJob) -> tuple[dict[str, Any], int]:
    import keras

    from training.trainer import explain  # TensorFlow: imported by the attempt, not with this module

    phases = Phases(job)
    if job.dispatched_at:
        phases.seconds["queue_wait"] = round((job.started_at - job.created_at).total_seconds(), 4)
    keras.utils.set_random_seed(job.seed)
    with phases.phase("load"):
        data, model, initial_epoch, initial_step = _load_and_build(job)
    params = job.params
    template = templates.get(job.template)
    plan = privacy_plan(job)
    failures: list[BaseException] = []  # what the pipelines met reading the dataset (TensorFlow hides it)
    if plan:
        with phases.phase("load"):
            rows = private_rows(job, data)
        steps = int(plan["steps_per_epoch"])
    else:
        steps = math.ceil(data.train_rows / params["batch_size"])

    def pipeline(first_epoch: int, skip: int):
        if plan:
            return private_dataset(job, rows, data, template=template, first_step=skip)
        return to_dataset(
            job,
            data,
            template=template,
            validation=False,
            first_epoch=first_epoch,
            skip_batches=skip,
            failures=failures,
        )

    validation = to_dataset(job, data, template=template, validation=True, failures=failures)
    if initial_epoch < params["epochs"]:
        if initial_epoch or initial_step:
            where = f"epoch {initial_epoch}" + (f" and {initial_step} batches of the next" if initial_step else "")
            resilient(job_services.log, job, f"resuming from the checkpoint after {where}")
        callback = job_callback(job, epochs=params["epochs"], steps=steps, first_step=initial_step)
        # A resumed epoch's remaining batches are a fit of their own: every pipeline then has a known length.
        # One whose length Keras must find out ends in an OutOfRange step, which still counts an optimizer
        # iteration, and Keras takes that first epoch's length for every later one (their last batches dropped).
        parts = [(initial_epoch, initial_epoch + 1, initial_step)] if initial_step else []
        parts.append((initial_epoch + (1 if initial_step else 0), params["epochs"], 0))
        with phases.phase("fit"), reading_errors(failures):
            for first, end, skip in parts:
                if first >= end or callback.cancelled or callback.stop_code:
                    continue
                try:
                    model.fit(
                        pipeline(first, skip),
                        validation_data=validation,
                        epochs=end,
                        initial_epoch=first,
                        verbose=0,
                        callbacks=[callback],
                        shuffle=False,  # the pipeline shuffles each epoch in its own reproducible order
                    )
                finally:
                    callback.on_train_end()  # Keras skips it when fit raises: the monitor thread must not outlive fit
        if callback.cancelled:
            raise Cancelled
        if callback.stop_code:
            raise Stopped(callback.stop_code)
        phases.seconds["fit"] = round(phases.seconds["fit"] - callback.checkpoint_seconds, 4)
        phases.seconds["checkpoint"] = round(callback.checkpoint_seconds, 4)
        phases.seconds["train_examples_per_epoch"] = data.train_rows
        phases.seconds["epochs_fitted"] = params["epochs"] - initial_epoch
    # Training is done: the budget is enforced while it runs, so a finished model is evaluated and published.
    final = _progress(params["epochs"], params["epochs"], steps, steps)
    if resilient(job_services.heartbeat, job=job, progress=final) == Status.CANCELLING:
        raise Cancelled
    if plan:
        check_private_steps(job, model, plan)
    with phases.phase("evaluate"), reading_errors(failures):
        metrics = evaluate(model, validation, data, template=template)
    scores = ", ".join(f"{k}={v}" for k, v in metrics.items() if isinstance(v, float))
    resilient(job_services.log, job, f"evaluated: {scores}")
    reference = None
    if plan.get("reference"):
        with phases.phase("reference"), reading_errors(failures):
            reference = train_reference(job, data, template=template, validation=validation, failures=failures)
    if plan:
        metrics["privacy"] = privacy_metrics(plan, reference)
    model = served_model(model)  # a private job's PrivateModel as the plain functional model (the same weights)
    with phases.phase("explain"):
        explainer, explanation_fields = explanations(job, model, data, template=template)
    registry = publishing.publisher()  # serving's registry, bound when Django starts (training may not import it)
    version = resilient(registry.reserve_version, job=job)  # the same row when repeated
    with tempfile.TemporaryDirectory(prefix="export-") as tmp:
        export_dir = Path(tmp) / "model"
        with phases.phase("export"):
            explain.export(model, export_dir, explainer=explainer)
        fields = manifest_fields(job, model, data, template=template) | explanation_fields
        if plan:
            fields["privacy"] = privacy_statement(plan, reference, learned=template.learned_from_data(params))
        with phases.phase("compile"):
            fields |= compile_for_serving(model, export_dir, data, template=template, signature=fields["signature"])
        with phases.phase("upload_register"):
            # The connection idles through the export and upload: a lost one costs a repeat of the upload
            # (same keys, same bytes), not the attempt.
            resilient(registry.publish, version=version, export_dir=export_dir, metrics=metrics, manifest_fields=fields)
    served_by = fields["runtime"] + (f" ({fields['runtime_reason']})" if fields.get("runtime_reason") else "")
    resilient(
        job_services.log,
        job,
        f"published {job.model_name} v{version.version} at {version.object_prefix}; served by {served_by}",
    )
    return metrics, version.version


def explanations(job: TrainingJob, model, data: TrainingData, *, template: templates.Template):
    """The model's explainer (exported as the ``explain`` signature) and the manifest's ``explanation`` (with the
    memory one instance's explanation takes, so serving can bound it) and ``global_explanations``, averaged over
    the first validation rows; (None, {}) for a model it cannot explain.

    A private version has no global explanations: they would publish validation rows' ids and tokens, with
    counts, in its manifest, beside a statement that the model protects each row."""
    from training.trainer import explain

    explainer, reason = explain.explainer_for(model, input_kind=template.input_kind, binary=template.task == "binary")
    if explainer is None:
        resilient(job_services.log, job, f"no explanations for this model: {reason}")
        return None, {}
    per_instance = explain_bytes_per_instance(job, template, classes=len(data.label_names))
    fields = {"explanation": explainer.describe() | {"bytes_per_instance": per_instance}}
    if privacy_plan(job):
        resilient(job_services.log, job, "explanations: no global explanations for a private version")
        return explainer, fields
    rows = min(len(data.val_sample), explain.GLOBAL_ROWS)
    overall = explain.global_explanations(
        explainer, model_inputs(template, data.val_sample), rows=rows, per_call=explain.rows_per_call(per_instance)
    )
    top = ", ".join(entry["feature"] for entry in overall["top"][:5])
    resilient(job_services.log, job, f"explanations: most attributed over {rows} validation rows: {top}")
    return explainer, fields | {"global_explanations": overall}


def explain_bytes_per_instance(job: TrainingJob, template: templates.Template, *, classes: int) -> int:
    """Memory one instance's explanation takes: every interpolation step's activations and their gradients, by
    the template's own estimate (what the job's memory limit was checked with)."""
    from training.trainer import explain

    stats = (job.dataset.stats or {}).get("columns", {})
    types = {c["name"]: c["type"] for c in job.dataset.schema}
    columns = {name: {"type": types.get(name)} | (stats.get(name) or {}) for name in job.feature_columns}
    estimate, _ = template.estimate_memory(job.params, columns=columns, classes=max(2, classes))
    return explain.bytes_per_instance(estimate.activations_per_example)


def load_job_data(job: TrainingJob) -> TrainingData:
    """The job's dataset, split as the job splits it (the same rows every time: the split is seeded).

    Read from the canonical copy; a dataset validated before it existed is read from its original.
    """
    dataset = job.dataset
    return load(
        object_key=dataset.canonical_key or dataset.object_key,
        fmt="parquet" if dataset.canonical_key else dataset.format,
        schema=dataset.schema,
        feature_columns=job.feature_columns,
        label_column=job.label_column,
        validation_split=job.validation_split,
        seed=job.seed,
    )


def _load_and_build(job: TrainingJob):
    try:
        data = load_job_data(job)
    except Exception as exc:
        if transient(exc) or isinstance(exc, MemoryError):
            raise
        raise InvalidData(f"{type(exc).__name__}: {exc}") from exc
    resilient(
        job_services.log,
        job,
        f"reading {data.train_rows + data.val_rows} rows: {data.train_rows} train, "
        f"{data.val_rows} validation; labels {data.label_names}",
    )
    model, initial_epoch, initial_step = restore_or_build(job, data)
    return data, model, initial_epoch, initial_step


def _progress(epoch: int, epochs: int, step: int, steps: int) -> dict[str, int]:
    return {"epoch": epoch, "epochs": epochs, "step": step, "steps": steps}


@contextlib.contextmanager
def reading_errors(failures: list[BaseException]):
    """Raise what a pipeline met reading the dataset (a storage outage is transient: the job is requeued and
    resumes from its checkpoint) instead of the error TensorFlow wrapped it in."""
    try:
        yield
    except Exception as exc:
        if failures:
            raise failures[-1] from exc
        raise


def model_inputs(template: templates.Template, rows: Rows):
    """Rows' features shaped by the template's input kind (as serving feeds them): a (N, 1) array per column, or
    the one string column."""
    if template.input_kind == "columns":
        return {name: values.reshape(-1, 1) for name, values in rows.features.items()}
    (values,) = rows.features.values()
    return values


def to_dataset(
    job: TrainingJob,
    data: TrainingData,
    *,
    template: templates.Template,
    validation: bool,
    first_epoch: int = 0,
    skip_batches: int = 0,
    failures: list[BaseException] | None = None,
):
    """The split as a tf.data pipeline of batches, streamed from storage each epoch.

    Training batches come in the epoch's reproducible shuffled order (``TrainingData.rows``); Keras starts the
    pipeline once per epoch, so the n-th start is epoch ``first_epoch + n``. The first epoch skips
    ``skip_batches`` batches: the ones a mid-epoch checkpoint had already trained on. An exception met while
    reading is appended to ``failures``: TensorFlow reports it as an opaque error of its own.
    """
    import tensorflow as tf

    batch_size = job.params["batch_size"]
    starts = [first_epoch]

    def batches():
        epoch = starts[0]
        skip = skip_batches if epoch == first_epoch else 0
        starts[0] += 1
        try:
            for number, batch in enumerate(epoch_batches(epoch)):
                if number >= skip:
                    yield batch
        except Exception as exc:
            if failures is not None:
                failures.append(exc)
            raise

    def epoch_batches(epoch: int):
        pending: list[Rows] = []
        held = 0
        for chunk in data.rows(validation=validation, epoch=epoch, shuffle=not validation):
            pending.append(chunk)
            held += len(chunk)
            if held < batch_size:
                continue
            rows = Rows.concat(pending, data.feature_columns)
            whole = len(rows) - len(rows) % batch_size
            for start in range(0, whole, batch_size):
                yield _batch(rows.take(slice(start, start + batch_size)))
            pending, held = [rows.take(slice(whole, None))], len(rows) - whole
        if held:
            yield _batch(Rows.concat(pending, data.feature_columns))

    def _batch(rows: Rows):
        return training_batch(template, rows)

    dataset = tf.data.Dataset.from_generator(batches, output_signature=batch_signature(data, template=template))
    # Keras then knows an epoch's length. With ``skip_batches`` the pipeline is that one shorter epoch's (a resumed
    # epoch is fitted on its own: ``train_and_publish``).
    rows = data.val_rows if validation else data.train_rows
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(math.ceil(rows / batch_size) - skip_batches))
    if validation and data.val_rows <= VALIDATION_CACHE_ROWS:
        dataset = dataset.cache()  # its order never changes: read from storage once, not every epoch
    return dataset.prefetch(tf.data.AUTOTUNE)


def training_batch(template: templates.Template, rows: Rows):
    """(inputs, labels) of a training batch, as the model takes them."""
    return model_inputs(template, rows), rows.labels.astype("float32" if template.task == "binary" else "int64")


def batch_signature(data: TrainingData, *, template: templates.Template):
    """The tf.data ``output_signature`` of ``training_batch``'s (inputs, labels), any number of rows."""
    import tensorflow as tf

    def spec(values: np.ndarray, shape):
        return tf.TensorSpec(shape, tf.string if values.dtype == object else tf.float32)

    sample = data.train_sample
    if template.input_kind == "columns":
        inputs = {name: spec(values, (None, 1)) for name, values in sample.features.items()}
    else:
        inputs = spec(next(iter(sample.features.values())), (None,))
    return inputs, tf.TensorSpec((None,), tf.float32 if template.task == "binary" else tf.int64)


# --- private jobs (DP-SGD, ``training.trainer.private``) -------------------------------------------------------


def private_rows(job: TrainingJob, data: TrainingData) -> Rows:
    """A private job's whole training split, in memory (``training.privacy`` refuses a dataset above
    ``PRIVACY_MAX_TRAIN_ROWS``): Poisson sampling draws any row at any step."""
    if len(data.train_sample) == data.train_rows:
        rows = data.train_sample  # the sample is the whole split already
    else:
        rows = Rows.concat(list(data.rows(validation=False)), data.feature_columns)
    plan = privacy_plan(job)
    resilient(
        job_services.log,
        job,
        f"private training (DP-SGD): {plan['steps']} steps, {plan['steps_per_epoch']} per epoch, each row in a step "
        f"with probability {plan['sample_rate']:.6g}; noise multiplier {plan['noise_multiplier']:.4g}, clip norm "
        f"{plan['clip_norm']:.4g}, planned epsilon {plan['epsilon']:.4g} at delta {plan['delta']:.3g}",
    )
    return rows


def private_dataset(job: TrainingJob, rows: Rows, data: TrainingData, *, template: templates.Template, first_step: int):
    """A private job's training pipeline: ``rows`` Poisson-sampled at the plan's rate, the plan's steps per epoch
    (``first_step`` fewer: the rest of a resumed epoch, fitted alone)."""
    dp = private_module()
    return dp.poisson_dataset(
        rows,
        plan=privacy_plan(job),
        first_step=first_step,
        to_batch=lambda batch: training_batch(template, batch),
        signature=batch_signature(data, template=template),
    )


def check_private_steps(job: TrainingJob, model, plan: dict[str, Any]) -> None:
    """The model took exactly the plan's steps (its optimizer counts them across resumes: checkpoints keep it);
    any other count would not be what the accountant's epsilon is for, so the job fails rather than publish."""
    trained = int(model.optimizer.iterations.numpy())
    if trained != int(plan["steps"]):
        raise RuntimeError(f"private training took {trained} steps; its privacy plan accounts for {plan['steps']}")
    resilient(job_services.log, job, f"private training took {trained} steps, as planned")


def train_reference(
    job: TrainingJob, data: TrainingData, *, template: templates.Template, validation, failures: list[BaseException]
) -> dict[str, Any]:
    """A non-private model of the same params and seed on the same split (not published, no checkpoints): its
    validation metrics, for the tenant to see what the privacy cost in utility. Cancels and stops still apply."""
    import keras

    keras.utils.set_random_seed(job.seed)
    model = build(job, data, private=False)
    train = to_dataset(job, data, template=template, validation=False, failures=failures)
    callback = reference_callback(job)
    model.fit(train, epochs=job.params["epochs"], verbose=0, callbacks=[callback], shuffle=False)
    if callback.cancelled:
        raise Cancelled
    if callback.stop_code:
        raise Stopped(callback.stop_code)
    metrics = evaluate(model, validation, data, template=template)
    scores = ", ".join(f"{k}={v}" for k, v in metrics.items() if isinstance(v, float))
    resilient(job_services.log, job, f"non-private reference (not published) evaluated: {scores}")
    return metrics


def obey(callback, state: str) -> bool:
    """Stop a job's training (its callback's model) on a cancel or a stop code from the heartbeat; True when
    stopping. The callback keeps why: ``cancelled``, or the first ``stop_code``."""
    if state == Status.CANCELLING:
        callback.cancelled = True
    elif state in job_services.STOP_CODES:
        callback.stop_code = callback.stop_code or state
    else:
        return False
    callback.model.stop_training = True
    return True


def reference_callback(job: TrainingJob):
    """Beats while the reference trains and stops it on a cancel or a stop (no checkpoints: it is not published)."""
    import keras

    class ReferenceCallback(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.cancelled, self.stop_code, self.beaten = False, "", time.monotonic()

        def on_train_batch_end(self, batch, logs=None):
            if time.monotonic() - self.beaten < HEARTBEAT_EVERY_SECONDS:
                return
            self.beaten = time.monotonic()
            epochs = job.params["epochs"]
            obey(self, resilient(job_services.heartbeat, job=job, progress=_progress(epochs, epochs, 0, 0)))

    return ReferenceCallback()


def privacy_metrics(plan: dict[str, Any], reference: dict[str, Any] | None) -> dict[str, Any]:
    """What the job's metrics say under ``privacy``: the guarantee (its steps were checked against the plan's),
    and the reference's metrics when the plan asked for one."""
    values: dict[str, Any] = {"epsilon": plan["epsilon"], "delta": plan["delta"], "steps": int(plan["steps"])}
    if reference is not None:
        values["reference"] = {"metrics": reference}
    return values


def privacy_statement(
    plan: dict[str, Any], reference: dict[str, Any] | None, *, learned: tuple[str, ...]
) -> dict[str, Any]:
    """The version manifest's ``privacy``: the statement of ``training.privacy`` (how DP-fy ML's form), and the
    non-private reference's metrics when there was one."""
    statement = dict(privacy.statement(plan=plan, learned_from_data=learned))
    if reference is not None:
        statement["reference"] = {"metrics": reference}
    return statement


def served_model(model):
    """What is exported and compiled: a private job's PrivateModel as the plain functional model over the same
    layers (so the same weights; its training step is not part of what is served)."""
    dp = private_module()
    return dp.functional(model)


def build(job: TrainingJob, data: TrainingData, *, private: bool | None = None):
    """A new compiled model from the job's template, given what it may read of the job and the dataset; a private
    job's (``private`` defaults to whether the job has a privacy plan) as a PrivateModel configured by its plan."""
    plan = privacy_plan(job)
    private = bool(plan) if private is None else private
    types = {c["name"]: c["type"] for c in job.dataset.schema}
    stats = (job.dataset.stats or {}).get("columns", {})
    context = templates.BuildContext(
        params=job.params,
        feature_columns=list(job.feature_columns),
        column_types={c: types[c] for c in job.feature_columns},
        column_stats={c: stats.get(c) or {} for c in job.feature_columns},
        data=data,
        classes=len(data.label_names),
        private=private,
    )
    model = templates.get(job.template).build(context)
    if private:
        dp = private_module()
        model = dp.make_private(model, plan)
    return model


def last_checkpoint(job: TrainingJob) -> tuple[Any, int, int] | None:
    """(model, epochs completed, batches done in the next epoch) of the job's last checkpoint, or None."""
    import keras

    from training.trainer import models, private  # noqa: F401 - register the custom classes load_model needs

    meta = _checkpoint_pointer(job)
    if meta is None:
        return None
    with tempfile.TemporaryDirectory(prefix="ckpt-") as tmp:
        local = Path(tmp) / "model.keras"
        with open(local, "wb") as handle:
            storage.download_stream(checkpoint_prefix(job) + meta["file"], handle)
        return keras.models.load_model(local), int(meta["epoch"]), int(meta.get("step", 0))


def _checkpoint_pointer(job: TrainingJob) -> dict[str, Any] | None:
    meta_key = checkpoint_prefix(job) + "latest.json"
    if storage.head(meta_key) is None:
        return None
    return json.loads(storage.get_bytes(meta_key))


def restore_or_build(job: TrainingJob, data: TrainingData) -> tuple[Any, int, int]:
    """The model from the last checkpoint (with the epochs and batches it completed), or a new one; a private
    job's checkpoint configured by its plan again (the plan, not the checkpoint, holds the DP settings)."""
    checkpoint = last_checkpoint(job)
    if checkpoint is None:
        return build(job, data), 0, 0
    model, epoch, step = checkpoint
    plan = privacy_plan(job)
    if plan:
        dp = private_module()
        model = dp.make_private(model, plan)
    return model, epoch, step


def save_checkpoint(job: TrainingJob, model, epoch: int, step: int = 0) -> None:
    """Model (with optimizer state) first, then the pointer to it: a crash never points at half a file.

    ``epoch`` epochs are complete and ``step`` batches of the next one are done (a mid-epoch checkpoint); the
    file the previous pointer named is deleted once the new pointer is written.
    """
    if resilient(job_services.superseded, job=job):
        raise Stopped(job_services.SUPERSEDED)  # a newer attempt runs the job: its checkpoints are its own
    previous = _checkpoint_pointer(job)
    with tempfile.TemporaryDirectory(prefix="ckpt-") as tmp:
        local = Path(tmp) / "model.keras"
        model.save(local)
        name = f"epoch-{epoch:04d}-step-{step:08d}.keras"
        with open(local, "rb") as handle:
            storage.upload_stream(checkpoint_prefix(job) + name, handle)
    pointer = {"epoch": epoch, "step": step, "file": name}
    storage.put_bytes(checkpoint_prefix(job) + "latest.json", json.dumps(pointer).encode())
    if previous and previous.get("file") not in (None, name):
        storage.delete_key(checkpoint_prefix(job) + previous["file"])


def evaluate(model, validation, data: TrainingData, *, template: templates.Template) -> dict[str, Any]:
    """The held-out metrics of the template's evaluation kind."""
    predictions = model.predict(validation, verbose=0)
    return evaluation.evaluate(
        template.evaluation,
        truth=data.val_labels,
        predictions=predictions,
        label_names=data.label_names,
    )


def manifest_fields(job: TrainingJob, model, data: TrainingData, *, template: templates.Template) -> dict[str, Any]:
    """What the manifest says beside the files; serving reads ``task`` and ``input_kind`` (never the template)."""
    import tensorflow as tf

    def spec(tensor) -> dict[str, Any]:
        return {"dtype": str(tensor.dtype), "shape": [d if d is None else int(d) for d in tensor.shape]}

    outputs = (
        {"probability": f"P(label = {data.label_names[-1]})"}
        if template.task == "binary"
        else {"probabilities": f"one per label, in the order of label_names ({len(data.label_names)})"}
    )
    return {
        "template": job.template,  # for people and the registry's listing; serving reads the two kinds below
        "task": template.task,
        "input_kind": template.input_kind,
        "params": job.params,
        "job_id": str(job.id),
        "dataset": {
            "id": str(job.dataset_id),
            "sha256": job.dataset.sha256,
            "name": job.dataset.name,
            "version": job.dataset.version,
        },
        "feature_columns": job.feature_columns,
        "label_column": job.label_column,
        "label_names": data.label_names,
        "signature": {
            "name": "serving_default",
            "inputs": {t.name.split(":")[0]: spec(t) for t in model.inputs},
            "outputs": outputs,
        },
        "tensorflow_version": tf.__version__,
        "format": "tf_saved_model",
    }


def compile_for_serving(
    model, export_dir: Path, data: TrainingData, *, template: templates.Template, signature: dict[str, Any]
) -> dict[str, Any]:
    """The compiled artifact and its parity report, checked on the job's own held-out rows (manifest fields)."""
    from training.trainer import compile as compiler  # tf2onnx: only when a model is published

    return compiler.compile_version(
        model=model,
        export_dir=export_dir,
        input_kind=template.input_kind,
        signature=signature,
        binary=template.task == "binary",
        rows=lambda steps: compiler.gate_rows(
            data.val_sample.features, np.arange(len(data.val_sample)), signature, steps
        ),
    )


def compile_published(job: TrainingJob, saved_model_dir: Path) -> dict[str, Any]:
    """Compile a version published before compiled serving, from its job's last checkpoint (manifest fields).

    The checkpoint holds the Keras model (layers, vocabularies, weights) that the SavedModel was exported from;
    the parity gate then proves that what is compiled from it answers as the published SavedModel does, so a
    checkpoint that does not match the version (a re-run job, say) is refused rather than served.
    """
    checkpoint = last_checkpoint(job)
    if checkpoint is None:
        return {"runtime": "tensorflow", "runtime_reason": "not compiled: the job kept no checkpoint"}
    model = served_model(checkpoint[0])
    data, template = load_job_data(job), templates.get(job.template)
    signature = manifest_fields(job, model, data, template=template)["signature"]
    return compile_for_serving(model, saved_model_dir, data, template=template, signature=signature)


def job_callback(job: TrainingJob, *, epochs: int, steps: int, first_step: int = 0):
    """A Keras callback bound to the job (defined here so that Keras is imported only when training).

    A monitor thread beats, reports the step (from the optimizer's iteration
    counter) and, on a cancel or a stop (the budget or the quota used up, the
    tenant suspended), sets ``stop_training``, which Keras checks after every
    batch. Each epoch's end beats too, after its checkpoint, so a stop there
    keeps that epoch. Every ``TRAINING_CHECKPOINT_SECONDS`` the monitor also asks
    for a mid-epoch checkpoint, which the per-batch hook writes between two
    batches (it reads no logs, so Keras does not wait for them): a large
    dataset's long epoch is not lost to a worker that dies in it, since the
    resumed job skips the batches the checkpoint had trained on (the epoch's
    order is reproducible). A stop mid-epoch keeps the last checkpoint.
    """
    import threading

    import keras

    class JobCallback(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.epoch = 0
            self.epoch_start_iteration = 0
            self.skipped = first_step  # batches of the first epoch trained before a resume
            self._checkpoint_due = threading.Event()
            self._last_checkpoint = time.monotonic()
            self.checkpoint_seconds = 0.0
            self.cancelled = False
            self.stop_code = ""
            self._stop = threading.Event()
            self._thread: threading.Thread | None = None

        def _iteration(self) -> int:
            return int(self.model.optimizer.iterations.numpy())

        def _monitor(self) -> None:
            try:
                while not self._stop.wait(HEARTBEAT_EVERY_SECONDS):
                    if time.monotonic() - self._last_checkpoint >= settings.TRAINING_CHECKPOINT_SECONDS:
                        self._checkpoint_due.set()
                    step = max(0, min(steps, self.skipped + self._iteration() - self.epoch_start_iteration))
                    try:
                        state = resilient(
                            job_services.heartbeat,
                            job=job,
                            progress=_progress(self.epoch + 1, epochs, step, steps),
                        )
                    except DATABASE_LOST as exc:  # database busy or away: beat again next time
                        logger.warning("job %s: heartbeat failed, will retry: %s", job.id, exc)
                        continue
                    if self.obey(state):
                        return
            finally:
                connection.close()  # this thread's own database connection

        def obey(self, state: str) -> bool:
            return obey(self, state)

        def on_train_begin(self, logs=None):
            # In the job's log context (its ids), like the thread that started it.
            self._thread = threading.Thread(
                target=contextvars.copy_context().run, args=(self._monitor,), name=f"job-{job.id}-monitor", daemon=True
            )
            self._thread.start()

        def on_train_end(self, logs=None):
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=30)
                self._thread = None

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            self.epoch_start_iteration = self._iteration()

        def on_train_batch_end(self, batch, logs=None):
            if not self._checkpoint_due.is_set() or self.model.stop_training:
                return
            self._checkpoint_due.clear()
            self._save(self.epoch, self.skipped + batch + 1)

        def _save(self, epoch: int, step: int) -> None:
            started = time.monotonic()
            save_checkpoint(job, self.model, epoch, step)
            self._last_checkpoint = time.monotonic()
            self.checkpoint_seconds += self._last_checkpoint - started

        def on_epoch_end(self, epoch, logs=None):
            self.skipped = 0  # only the first epoch of a resumed job was partly trained before
            if self.cancelled or self.stop_code:
                return  # stopped mid-epoch: this epoch is not complete, keep the previous checkpoint
            values = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, int | float | np.floating)}
            resilient(job_services.record_epoch, job=job, epoch=epoch + 1, values=values)
            self._save(epoch + 1, 0)
            state = resilient(job_services.heartbeat, job=job, progress=_progress(epoch + 1, epochs, steps, steps))
            summary = ", ".join(f"{k}={v:.4f}" for k, v in values.items())
            resilient(job_services.log, job, f"epoch {epoch + 1}/{epochs}: {summary}")
            if epoch + 1 < epochs and state in job_services.STOP_CODES:
                self.obey(state)

    return JobCallback()
