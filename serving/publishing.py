"""The one publishing service: training writes model versions to storage and the registry through it.

Training reaches it through ``training.publishing`` (bound in ``serving.apps``), since training comes first.

Order matters: a version number is reserved (row ``publishing``, invisible),
every file is uploaded with its sha256, ``manifest.json`` is written last,
and only then is the row marked ``ready``. A retried job reuses its own
reserved version, so a worker dying mid-publish never leaves a half-written
visible version or burns a number twice. Versions are never overwritten once ready.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from core import storage
from core.errors import ConflictError
from serving.models import ModelVersion, RegisteredModel

MANIFEST = "manifest.json"


def version_prefix(tenant_id, model_name: str, version: int) -> str:
    return storage.tenant_key(tenant_id, "models", model_name, str(version)) + "/"


def reserve_version(*, job) -> ModelVersion:
    """The job's version row (created on first call; the same row on retries)."""
    existing = ModelVersion.objects.filter(job=job).select_related("model").first()
    if existing is not None:
        if existing.status == ModelVersion.Status.READY:
            raise ConflictError("This job already published its version.", code="already_published")
        return existing
    registered, _ = RegisteredModel.objects.get_or_create(tenant_id=job.tenant_id, name=job.model_name)
    for _ in range(5):
        with transaction.atomic():
            locked = RegisteredModel.objects.select_for_update().get(pk=registered.pk)
            in_use = ModelVersion.objects.filter(model=registered).aggregate(v=Max("version"))["v"] or 0
            latest = max(locked.last_version, in_use)
            locked.last_version = latest + 1
            locked.save(update_fields=["last_version"])
            try:
                return ModelVersion.objects.create(
                    tenant_id=job.tenant_id,
                    model=registered,
                    version=latest + 1,
                    job=job,
                    dataset_id=job.dataset_id,
                    template=job.template,
                    object_prefix=version_prefix(job.tenant_id, job.model_name, latest + 1),
                )
            except IntegrityError:
                continue
    raise ConflictError("Could not reserve a version number; retry.", code="version_conflict")


def publish(*, version: ModelVersion, export_dir: Path, manifest_fields: dict[str, Any], metrics: dict) -> ModelVersion:
    """Upload a SavedModel directory under the version's prefix, manifest last, then make it visible."""
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in Path(export_dir).rglob("*") if p.is_file()):
        relative = path.relative_to(export_dir).as_posix()
        files[relative] = {"sha256": storage.file_sha256(path), "size": path.stat().st_size}
        with open(path, "rb") as handle:
            storage.upload_stream(version.object_prefix + relative, handle)
    manifest = {
        "model_name": version.model.name,
        "version": version.version,
        "files": files,
        "created_at": timezone.now().isoformat(),
        "metrics": metrics,
        **manifest_fields,
    }
    storage.put_bytes(
        version.object_prefix + MANIFEST,
        json.dumps(manifest, indent=2, default=str).encode(),
        content_type="application/json",
    )
    version.manifest = manifest
    version.metrics = metrics
    version.size_bytes = sum(f["size"] for f in files.values())
    version.status = ModelVersion.Status.READY
    version.published_at = timezone.now()
    version.save(update_fields=["manifest", "metrics", "size_bytes", "status", "published_at"])
    return version
