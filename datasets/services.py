"""Writes for datasets: ingestion (direct and multipart), validation, deletion, cleanup."""

from __future__ import annotations

import hashlib
import logging
import math
import re
import tempfile
import uuid
from dataclasses import dataclass
from datetime import timedelta
from itertools import islice
from typing import IO, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from core import logs, queue, storage
from core.errors import ConflictError, NotFoundError, PayloadTooLargeError, QuotaExceededError, ServiceError
from datasets import canonical, pii, selectors, signals
from datasets.batches import open_batches
from datasets.canonical import CanonicalWriter
from datasets.models import Dataset, DatasetFormat, DatasetUpload, PiiMode
from datasets.profiling import DatasetProfile
from datasets.readers import DatasetFormatError, check_text_head, detect_format, open_rows
from tenants import audit
from tenants import selectors as tenant_selectors
from tenants import services as tenant_services
from tenants.models import Tenant

logger = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[\w][\w .,()+-]{0,99}$")
MIN_PART_BYTES = 8 * 1024 * 1024
HEAD_BYTES = 64 * 1024
HEAD_ROWS = 1000


class DatasetRejected(ServiceError):
    """The upload is unusable; nothing was stored."""

    code = "invalid_dataset"


def _rejected(error: DatasetFormatError) -> DatasetRejected:
    return DatasetRejected(error.message, code=error.code, details=error.details)


# --- checks shared by both upload paths -------------------------------------------------


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ServiceError("A dataset needs a name.", code="invalid_name", details={"name": ["Required."]})
    if len(name) > 100:
        raise ServiceError("Dataset names are at most 100 characters.", code="invalid_name")
    if not NAME_RE.match(name):
        raise ServiceError(
            "Dataset names use letters, digits, spaces and . , ( ) + - _ only, starting with a letter or digit.",
            code="invalid_name",
        )
    return name


def check_format(fmt: str | None) -> str | None:
    if fmt in (None, ""):
        return None
    if fmt not in DatasetFormat.values:
        raise ServiceError(f"Unknown format {fmt!r}; use csv, parquet or jsonl.", code="unknown_format")
    return fmt


def check_column_tags(tags: Any) -> dict[str, str]:
    if tags in (None, ""):
        return {}
    if not isinstance(tags, dict) or not all(isinstance(k, str) and v == "pii" for k, v in tags.items()):
        raise ServiceError('column_tags maps column names to "pii", e.g. {"email": "pii"}.', code="invalid_column_tags")
    return tags


def upload_limit(*, tenant: Tenant) -> tuple[int, int]:
    """(largest dataset the plan allows, storage bytes left in the quota)."""
    plan = tenant.plan
    left = max(0, plan.storage_bytes - tenant_selectors.storage_bytes_used(tenant=tenant))
    return plan.max_dataset_bytes, left


def check_size(*, tenant: Tenant, size: int) -> None:
    max_dataset, left = upload_limit(tenant=tenant)
    if size > max_dataset:
        raise PayloadTooLargeError(
            f"The file is {size} bytes; the plan allows {max_dataset} per dataset.",
            code="dataset_too_large",
            details={"limit": max_dataset, "size": size},
        )
    if size > left:
        raise QuotaExceededError(
            f"The file is {size} bytes; {left} bytes of storage quota are left.",
            code="storage_quota_exceeded",
            details={"remaining": left, "size": size},
        )


def reserve_storage(*, tenant: Tenant, size: int) -> Tenant:
    """Check the quota for ``size`` more bytes under a lock on the tenant; call inside the transaction that
    inserts the row holding them.

    The lock serializes concurrent uploads of one tenant between the check and the insert, so two uploads that
    each fit cannot both pass and together exceed the quota.
    """
    locked = tenant_services.lock_tenant(tenant_id=tenant.pk)
    check_size(tenant=locked, size=size)
    return locked


def inspect_head(stream: IO[bytes], *, fmt: str | None, filename: str, label_column: str, tags: dict[str, str]) -> str:
    """Detect the format and check the header and first row; the stream must be seekable."""
    head = stream.read(HEAD_BYTES)
    stream.seek(0)
    if not head:
        raise DatasetRejected("The file is empty.", code="empty_file")
    fmt = fmt or detect_format(head, filename)
    try:
        if fmt != "parquet":
            check_text_head(head)
        columns, rows = open_rows(fmt, stream)
        # The first rows are checked now, so most broken files never get stored.
        if sum(1 for _ in islice(rows, HEAD_ROWS)) == 0:
            raise DatasetFormatError("header_only", "The file has a header but no rows.")
    except DatasetFormatError as exc:
        raise _rejected(exc) from None
    finally:
        stream.seek(0)
    if label_column and label_column not in columns:
        raise DatasetRejected(
            f"label_column {label_column!r} is not a column of the file.",
            code="unknown_label_column",
            details={"columns": columns[:50]},
        )
    unknown = sorted(set(tags) - set(columns))
    if unknown:
        raise DatasetRejected(
            "column_tags names columns the file lacks.", code="unknown_tagged_column", details={"columns": unknown}
        )
    if label_column and label_column in tags:
        raise DatasetRejected("The label column cannot be tagged pii.", code="pii_label_column")
    return fmt


def dataset_key(*, tenant_id, dataset_id, fmt: str) -> str:
    """The object key of a dataset's file (an upload streamed to S3 needs it before the row exists)."""
    return storage.tenant_key(tenant_id, "datasets", str(dataset_id), f"data.{fmt}")


def object_key(dataset: Dataset) -> str:
    return dataset_key(tenant_id=dataset.tenant_id, dataset_id=dataset.id, fmt=dataset.format)


def dataset_folder(tenant_id, dataset_id) -> str:
    """The prefix holding every object of one dataset (what deletion removes)."""
    return storage.tenant_key(tenant_id, "datasets", str(dataset_id)) + "/"


def _new_dataset(
    *, tenant: Tenant, name: str, fmt: str, filename: str, label_column: str, dataset_id=None, **fields
) -> Dataset:
    """An unsaved dataset row with its id and object key decided (the version is given on insert)."""
    dataset = Dataset(
        tenant=tenant,
        id=dataset_id or uuid.uuid4(),
        name=name,
        format=fmt,
        original_filename=filename[:255],
        label_column=label_column,
        **fields,
    )
    dataset.object_key = object_key(dataset)
    return dataset


def _insert_with_next_version(dataset: Dataset) -> Dataset:
    """Give the row the next version of its name; retried if another upload takes it first."""
    for _ in range(5):
        dataset.version = selectors.next_version(tenant=dataset.tenant, name=dataset.name)
        try:
            with transaction.atomic():
                dataset.save(force_insert=True)
            return dataset
        except IntegrityError:
            continue
    raise ConflictError("Too many concurrent uploads of this name; retry.", code="version_conflict")


VALIDATE_DATASET = "datasets.tasks.validate_dataset"


def _enqueue_validation(dataset_id) -> None:
    # robust: a broker hiccup must not fail the upload; the sweeper re-sends stuck validations.
    queue.send_on_commit(VALIDATE_DATASET, robust=True, dataset_id=str(dataset_id))


# --- direct upload ---------------------------------------------------------------------


class _HashingWriter:
    def __init__(self, sink: IO[bytes]) -> None:
        self.sink, self.hash, self.size = sink, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.sink.write(data)

    def flush(self) -> None:
        self.sink.flush()

    def writable(self) -> bool:
        return True

    # io.TextIOWrapper and pyarrow probe these.
    closed = False

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self.size


@dataclass(frozen=True)
class StoredObject:
    """A file the upload handler already streamed into the object at ``key``, for the dataset ``dataset_id``."""

    dataset_id: uuid.UUID
    key: str
    sha256: str
    size: int


def create_dataset(
    *,
    tenant: Tenant,
    name: str,
    staged: IO[bytes] | None = None,
    staged_sha256: str = "",
    staged_size: int = 0,
    stored: StoredObject | None = None,
    filename: str = "",
    fmt: str | None = None,
    label_column: str = "",
    column_tags: dict[str, str] | None = None,
    pii_mode: str = PiiMode.HASH,
) -> Dataset:
    """Store an upload as a new dataset version (status ``validating``) and queue its validation.

    The file is either ``staged`` (a local file, uploaded here after its PII columns were rewritten) or
    ``stored`` (streamed to its object while the request arrived, which datasets/uploads.py does only for
    files without PII tags). The same checks run either way, and whatever a refused upload put in storage is
    deleted, so a rejection leaves nothing behind.
    """
    dataset_id = stored.dataset_id if stored is not None else uuid.uuid4()
    try:
        name = check_name(name)
        fmt = check_format(fmt)
        tags = check_column_tags(column_tags)
        if pii_mode not in PiiMode.values:
            raise ServiceError("pii_mode is hash or drop.", code="invalid_pii_mode")
        if stored is not None and tags:
            raise ServiceError(
                "column_tags was sent empty before the file, so the file was stored as sent, and tagged after it; "
                "send column_tags once, before the file.",
                code="conflicting_column_tags",
            )
        size = stored.size if stored is not None else staged_size
        if size == 0:
            raise DatasetRejected("The file is empty.", code="empty_file")
        check_size(tenant=tenant, size=size)
        fmt = _inspect_upload(staged, stored, fmt=fmt, filename=filename, label_column=label_column, tags=tags)
        dataset = _new_dataset(
            tenant=tenant,
            name=name,
            fmt=fmt,
            filename=filename,
            label_column=label_column,
            dataset_id=dataset_id,
            status=Dataset.Status.VALIDATING,
            column_tags=tags,
            pii_mode=pii_mode,
        )
        dataset.sha256, dataset.size_bytes = _store_file(dataset, staged, staged_sha256, staged_size, stored)
        dataset.duplicate_of = selectors.duplicate_of(tenant=tenant, sha256=dataset.sha256)
        with transaction.atomic():
            reserve_storage(tenant=tenant, size=dataset.size_bytes)  # concurrent uploads may have used it meanwhile
            _insert_with_next_version(dataset)
            _enqueue_validation(dataset.id)
            audit.record(
                tenant=tenant,
                action="dataset.create",
                target=dataset,
                details={"name": dataset.name, "version": dataset.version, "size_bytes": dataset.size_bytes},
            )
    except BaseException:
        storage.delete_prefix(dataset_folder(tenant.id, dataset_id))
        raise
    return dataset


def _inspect_upload(
    staged: IO[bytes] | None,
    stored: StoredObject | None,
    *,
    fmt: str | None,
    filename: str,
    label_column: str,
    tags: dict[str, str],
) -> str:
    """The head checks on the staged file, or on the stored object (a few ranged reads of its first bytes)."""
    if stored is None:
        return inspect_head(staged, fmt=fmt, filename=filename, label_column=label_column, tags=tags)
    with storage.open_reader(stored.key, buffer_size=HEAD_BYTES, size=stored.size) as stream:
        return inspect_head(stream, fmt=fmt, filename=filename, label_column=label_column, tags=tags)


def _store_file(
    dataset: Dataset, staged: IO[bytes] | None, staged_sha256: str, staged_size: int, stored: StoredObject | None
) -> tuple[str, int]:
    """Put the file in the dataset's object, unless it was streamed there; returns the object's sha256 and size."""
    if stored is not None:
        # The key carries the format the head showed when streaming began; a `format` field sent after the file
        # may name another (the row's format is what readers use, as for a presigned multipart upload).
        dataset.object_key = stored.key
        return stored.sha256, stored.size
    if dataset.column_tags:
        return _upload_without_pii(dataset, staged)
    storage.upload_stream(dataset.object_key, staged)
    return staged_sha256, staged_size


def _upload_without_pii(dataset: Dataset, staged: IO[bytes]) -> tuple[str, int]:
    """Rewrite with PII hashed or dropped into a second staged file, then upload that."""
    key = pii.tenant_pii_key(dataset.tenant_id)
    with tempfile.TemporaryFile(dir=settings.DATASET_STAGING_DIR) as clean:
        writer = _HashingWriter(clean)
        try:
            pii.rewrite(
                dataset.format, staged, writer, pii_columns=set(dataset.column_tags), mode=dataset.pii_mode, key=key
            )
        except DatasetFormatError as exc:
            raise _rejected(exc) from None
        clean.flush()
        clean.seek(0)
        storage.upload_stream(dataset.object_key, clean)
        return writer.hash.hexdigest(), writer.size


# --- multipart upload straight to S3 --------------------------------------------------------


def start_multipart_upload(
    *,
    tenant: Tenant,
    name: str,
    size: int,
    filename: str = "",
    fmt: str | None = None,
    label_column: str = "",
    column_tags: dict[str, str] | None = None,
) -> tuple[DatasetUpload, list[dict[str, Any]]]:
    """Reserve a dataset version and return presigned URLs, one per part, for the client to PUT."""
    name = check_name(name)
    fmt = check_format(fmt) or detect_format(b"", filename)
    if check_column_tags(column_tags):
        raise ServiceError(
            "Columns tagged pii need the proxied upload (POST /api/v1/datasets): raw values must never reach storage.",
            code="pii_requires_proxied_upload",
        )
    if size <= 0:
        raise DatasetRejected("The file is empty.", code="empty_file")
    check_size(tenant=tenant, size=size)
    part_size = max(MIN_PART_BYTES, math.ceil(size / settings.DATASET_MULTIPART_MAX_PARTS))
    dataset = _new_dataset(
        tenant=tenant,
        name=name,
        fmt=fmt,
        filename=filename,
        label_column=label_column,
        status=Dataset.Status.UPLOADING,
        size_bytes=size,
    )
    s3_upload_id = storage.create_multipart_upload(dataset.object_key)
    try:
        with transaction.atomic():
            reserve_storage(tenant=tenant, size=size)  # the declared bytes count from now (see storage_bytes_used)
            _insert_with_next_version(dataset)
            upload = DatasetUpload.objects.create(
                tenant=tenant,
                dataset=dataset,
                s3_upload_id=s3_upload_id,
                declared_size=size,
                part_size=part_size,
                expires_at=timezone.now() + timedelta(hours=settings.DATASET_UPLOAD_TTL_HOURS),
            )
            audit.record(
                tenant=tenant,
                action="dataset.upload_start",
                target=dataset,
                details={"name": dataset.name, "version": dataset.version, "declared_size": size},
            )
    except BaseException:
        storage.abort_multipart_upload(dataset.object_key, upload_id=s3_upload_id)
        raise
    return upload, part_urls(upload)


def part_sizes(*, declared_size: int, part_size: int) -> list[int]:
    """The exact size of each part of an upload: ``part_size`` each, the last one what remains."""
    count = math.ceil(declared_size / part_size)
    return [part_size] * (count - 1) + [declared_size - part_size * (count - 1)]


def part_urls(upload: DatasetUpload) -> list[dict[str, Any]]:
    """A presigned PUT URL per part, each signing the part's exact length: S3 refuses any other body size.

    The URLs live DATASET_PART_URL_TTL_SECONDS (not as long as the upload); ``POST …/uploads/<id>/part-urls``
    signs fresh ones while the upload is pending.
    """
    upload_left = int((upload.expires_at - timezone.now()).total_seconds())
    ttl = max(1, min(settings.DATASET_PART_URL_TTL_SECONDS, upload_left))
    sizes = part_sizes(declared_size=upload.declared_size, part_size=upload.part_size)
    return [
        {
            "part_number": n,
            "size": size,
            "url": storage.presigned_part_url(
                upload.dataset.object_key,
                upload_id=upload.s3_upload_id,
                part_number=n,
                content_length=size,
                expires_in=ttl,
            ),
        }
        for n, size in enumerate(sizes, start=1)
    ]


def check_stored_parts(*, upload: DatasetUpload) -> None:
    """Refuse the upload unless S3 holds exactly the declared layout: every part at its signed size, no others.

    Defence in depth behind the signed lengths (an S3 that does not enforce them, or a URL signed by older code):
    nothing larger than declared is ever completed into an object.
    """
    expected = dict(enumerate(part_sizes(declared_size=upload.declared_size, part_size=upload.part_size), start=1))
    stored = {
        part["PartNumber"]: part["Size"]
        for part in storage.list_parts(upload.dataset.object_key, upload_id=upload.s3_upload_id)
    }
    wrong = sorted(n for n, size in stored.items() if expected.get(n) != size)
    missing = sorted(set(expected) - set(stored))
    if wrong or missing or sum(stored.values()) != upload.declared_size:
        raise DatasetRejected(
            f"The parts in storage hold {sum(stored.values())} bytes; {upload.declared_size} were declared "
            "in parts of the sizes given at the start.",
            code="size_mismatch",
            details={"wrong_size_parts": wrong[:100], "missing_parts": missing[:100]},
        )


def complete_multipart_upload(*, tenant: Tenant, upload_id, parts: list[dict[str, Any]]) -> Dataset:
    upload = DatasetUpload.objects.for_tenant(tenant).select_related("dataset").filter(pk=upload_id).first()
    if upload is None:
        raise NotFoundError("No such upload.")
    if upload.status != DatasetUpload.Status.PENDING:
        raise ConflictError(f"This upload is {upload.status}.", code="upload_not_pending")
    if upload.expires_at <= timezone.now():
        abort_upload(upload=upload)
        raise ConflictError("This upload expired and was aborted; start a new one.", code="upload_expired")
    dataset = upload.dataset
    try:
        check_stored_parts(upload=upload)
    except DatasetRejected:
        _discard(upload)
        raise
    except storage.ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500:
            raise  # storage unavailable: a retryable 503
        # NoSuchUpload with the object present: completed by an earlier call (its size is checked below).
        code = exc.response.get("Error", {}).get("Code", "")
        if code != "NoSuchUpload" or storage.head(dataset.object_key) is None:
            raise ServiceError(f"S3 refused to list the upload's parts ({code}).", code="invalid_parts") from None
    s3_parts = [{"PartNumber": int(p["part_number"]), "ETag": str(p["etag"])} for p in parts]
    try:
        storage.complete_multipart_upload(dataset.object_key, upload_id=upload.s3_upload_id, parts=s3_parts)
    except storage.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        # NoSuchUpload with the object present: an earlier call completed it and its answer was lost.
        if code != "NoSuchUpload" or storage.head(dataset.object_key) is None:
            raise ServiceError(
                f"S3 refused to complete the upload ({code}); check part numbers and ETags.", code="invalid_parts"
            ) from None
    try:
        meta = storage.head_or_raise(dataset.object_key)
        if meta["ContentLength"] != upload.declared_size:
            raise DatasetRejected(
                f"Uploaded {meta['ContentLength']} bytes; {upload.declared_size} were declared.", code="size_mismatch"
            )
        with storage.open_reader(dataset.object_key, buffer_size=HEAD_BYTES, size=meta["ContentLength"]) as stream:
            dataset.format = inspect_head(
                stream, fmt=None, filename=dataset.original_filename, label_column=dataset.label_column, tags={}
            )
    except DatasetRejected:
        _discard(upload)
        raise
    with transaction.atomic():
        # Two concurrent completes both reach here; only the first moves the upload on.
        if DatasetUpload.objects.select_for_update().get(pk=upload.pk).status != DatasetUpload.Status.PENDING:
            raise ConflictError("This upload was completed by another request.", code="upload_not_pending")
        dataset.status = Dataset.Status.VALIDATING
        dataset.save(update_fields=["status", "format"])
        upload.status = DatasetUpload.Status.COMPLETED
        upload.save(update_fields=["status"])
        _enqueue_validation(dataset.id)
        audit.record(tenant=tenant, action="dataset.upload_complete", target=dataset, details={"parts": len(parts)})
    return dataset


def _discard(upload: DatasetUpload) -> None:
    """Remove a rejected or abandoned upload's object and rows."""
    storage.abort_multipart_upload(upload.dataset.object_key, upload_id=upload.s3_upload_id)
    storage.delete_prefix(dataset_folder(upload.tenant_id, upload.dataset_id))
    upload.dataset.delete()


@transaction.atomic  # the audit row commits with the delete, or not at all when S3 fails first
def abort_upload(*, upload: DatasetUpload) -> None:
    audit.record(tenant=upload.tenant_id, action="dataset.upload_abort", target=upload.dataset)
    _discard(upload)


def abort_abandoned_uploads(*, now=None) -> int:
    """Abort multipart uploads past their expiry (periodic; safe to run twice)."""
    now = now or timezone.now()
    stale = DatasetUpload.objects.filter(status=DatasetUpload.Status.PENDING, expires_at__lte=now)
    count = 0
    for upload in stale.select_related("dataset"):
        abort_upload(upload=upload)
        count += 1
    return count


# --- validation and deletion -------------------------------------------------------------


def validate_dataset(*, dataset_id) -> Dataset | None:
    """Read the stored object once, infer schema and statistics, and mark it ready or invalid.

    Idempotent: a dataset that is no longer ``validating`` is left alone.
    """
    dataset = Dataset.objects.filter(pk=dataset_id).first()
    if dataset is None or dataset.status != Dataset.Status.VALIDATING:
        return dataset
    logs.set_tenant(dataset.tenant_id)  # the validation's log lines name the tenant (a task's context ends with it)
    errors: list[dict[str, Any]] = []
    profile = copy = None
    try:
        digest = hashlib.sha256()
        with storage.open_reader(dataset.object_key, digest=digest) as stream:
            columns, batches = open_batches(dataset.format, stream)
            profile = DatasetProfile(columns, label_column=dataset.label_column)
            copy = CanonicalWriter(canonical_key(dataset))
            profile.add_all(copy.tee(batches))  # one pass: each batch written to the copy, then profiled
            hashed_whole_object = stream.raw.hashed == stream.raw.size
        if not dataset.sha256:
            # CSV and JSON lines were hashed during the parse; Parquet is read out of order, so read it again.
            dataset.sha256 = digest.hexdigest() if hashed_whole_object else _object_sha256(dataset.object_key)
    except DatasetFormatError as exc:
        errors.append(exc.as_dict())
    except (storage.ClientError, ConnectionError, TimeoutError):
        _abort(copy)
        raise  # transient: the task retries with backoff
    except Exception:  # any other surprise marks the dataset invalid rather than leaving it validating
        logger.exception("validation of dataset %s failed", dataset.id)
        profile = None
        errors.append({"code": "unreadable", "message": "The file could not be read; check its format."})
    if profile is not None and not errors:
        errors.extend(_content_errors(profile, dataset))
    if errors:
        _abort(copy)
    else:
        dataset.canonical_key = copy.key
        dataset.canonical_sha256, dataset.canonical_size_bytes = copy.finish()
    _finish_validation(dataset, profile, errors)
    return dataset


def write_canonical_copy(*, dataset: Dataset) -> bool:
    """Write the canonical copy of a ready dataset validated before copies existed; False when it has one.

    Reads the original through the same batch readers validation uses; idempotent (the key is fixed, and the row
    is only updated while it still has no copy).
    """
    if dataset.status != Dataset.Status.READY or dataset.canonical_key:
        return False
    copy = CanonicalWriter(canonical_key(dataset))
    try:
        with storage.open_reader(dataset.object_key) as stream:
            _, batches = open_batches(dataset.format, stream)
            for _ in copy.tee(batches):
                pass
        sha256, size = copy.finish()
    except BaseException:
        copy.abort()
        raise
    fields = {"canonical_key": copy.key, "canonical_sha256": sha256, "canonical_size_bytes": size}
    return bool(Dataset.objects.filter(pk=dataset.pk, canonical_key="").update(**fields))


def _abort(copy: CanonicalWriter | None) -> None:
    if copy is not None:
        copy.abort()


def canonical_key(dataset: Dataset) -> str:
    return dataset_folder(dataset.tenant_id, dataset.id) + canonical.FILE_NAME


def _object_sha256(key: str) -> str:
    digest = hashlib.sha256()
    for chunk in storage.iter_chunks(key, chunk_size=8 * 1024 * 1024):
        digest.update(chunk)
    return digest.hexdigest()


def _content_errors(profile: DatasetProfile, dataset: Dataset) -> list[dict[str, Any]]:
    errors = []
    if profile.rows == 0:
        errors.append({"code": "header_only", "message": "The file has a header but no rows."})
    if dataset.label_column:
        classes = len(profile.labels)
        if classes < 2:
            errors.append(
                {
                    "code": "single_class_label",
                    "message": f"The label column {dataset.label_column!r} has {classes} distinct value(s); "
                    "a model needs at least two classes.",
                }
            )
    return errors


def _finish_validation(dataset: Dataset, profile: DatasetProfile | None, errors: list[dict[str, Any]]) -> None:
    """Write the outcome only if the row is still validating (a dataset deleted meanwhile stays deleted)."""
    fields: dict[str, Any] = {"validated_at": timezone.now(), "errors": errors, "sha256": dataset.sha256}
    if not errors:
        fields |= {
            "canonical_key": dataset.canonical_key,
            "canonical_sha256": dataset.canonical_sha256,
            "canonical_size_bytes": dataset.canonical_size_bytes,
        }
    if profile is not None:
        fields |= {"schema": profile.schema(), "stats": profile.stats(), "row_count": profile.rows}
    fields["status"] = Dataset.Status.INVALID if errors else Dataset.Status.READY
    if not errors and dataset.duplicate_of_id is None:
        fields["duplicate_of"] = selectors.duplicate_of(
            tenant=dataset.tenant, sha256=dataset.sha256, exclude_id=dataset.id
        )
    updated = Dataset.objects.filter(pk=dataset.pk, status=Dataset.Status.VALIDATING).update(**fields)
    if updated and errors:
        storage.delete_prefix(dataset_folder(dataset.tenant_id, dataset.id))
    elif not updated and not Dataset.objects.filter(pk=dataset.pk).exists():
        storage.delete_prefix(dataset_folder(dataset.tenant_id, dataset.id))  # deleted meanwhile: drop the copy too
    for name, value in fields.items():
        setattr(dataset, name, value)


def requeue_stuck_validations(*, older_than: timedelta = timedelta(minutes=30)) -> int:
    """Re-send validation for datasets left ``validating`` (a lost message); validation is idempotent."""
    stuck = Dataset.objects.filter(status=Dataset.Status.VALIDATING, created_at__lt=timezone.now() - older_than)
    ids = [str(pk) for pk in stuck.values_list("pk", flat=True)[:1000]]
    for dataset_id in ids:
        queue.send(VALIDATE_DATASET, dataset_id=dataset_id)
    return len(ids)


def delete_dataset(*, tenant: Tenant, dataset_id) -> None:
    """Delete the row, then its objects once that is committed (a failure never leaves a row without data)."""
    with transaction.atomic():
        dataset = selectors.datasets_of(tenant=tenant).select_for_update().filter(pk=dataset_id).first()
        if dataset is None:
            raise NotFoundError("No such dataset.")
        signals.deleting.send(sender=Dataset, dataset=dataset)  # a later app may refuse (a job reads it)
        upload = DatasetUpload.objects.filter(dataset=dataset, status=DatasetUpload.Status.PENDING).first()
        folder = dataset_folder(tenant.id, dataset.id)
        object_key, s3_upload_id = dataset.object_key, upload.s3_upload_id if upload else None
        audit.record(
            tenant=tenant,
            action="dataset.delete",
            target=dataset,
            details={"name": dataset.name, "version": dataset.version},
        )
        dataset.delete()

    def remove_objects() -> None:
        if s3_upload_id:
            storage.abort_multipart_upload(object_key, upload_id=s3_upload_id)
        storage.delete_prefix(folder)

    transaction.on_commit(remove_objects)
