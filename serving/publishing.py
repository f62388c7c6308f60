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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from core import storage
from core.errors import ConflictError
from events import services as events
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
    files = _upload(version, export_dir, sorted(p for p in Path(export_dir).rglob("*") if p.is_file()))
    manifest = {
        "model_name": version.model.name,
        "version": version.version,
        "files": files,
        "created_at": timezone.now().isoformat(),
        "metrics": metrics,
        **manifest_fields,
    }
    version.metrics = metrics
    version.status = ModelVersion.Status.READY
    version.published_at = timezone.now()
    # Visible and announced in one transaction (opened after the manifest's upload, not around it).
    return _write_manifest(version, manifest, also=["metrics", "status", "published_at"], then=_announce_ready)


def _announce_ready(version: ModelVersion) -> None:
    """``model.version_ready`` to the tenant's webhooks (scalar metrics, the runtime that will serve it)."""
    scalars = events.scalar_values(version.metrics)
    events.emit(
        tenant=version.tenant_id,
        event_type="model.version_ready",
        data={
            "model": version.model.name,
            "version": version.version,
            "job": str(version.job_id) if version.job_id else None,
            "runtime": version.manifest.get("runtime"),
            "metrics": scalars,
        },
        once_key=str(version.pk),
    )


def _upload(version: ModelVersion, folder: Path, paths: list[Path]) -> dict[str, dict[str, Any]]:
    """Each file under the version's prefix, at its path relative to ``folder``; its manifest entry."""
    files: dict[str, dict[str, Any]] = {}
    for path in paths:
        relative = path.relative_to(folder).as_posix()
        files[relative] = {"sha256": storage.file_sha256(path), "size": path.stat().st_size}
        with open(path, "rb") as handle:
            storage.upload_stream(version.object_prefix + relative, handle)
    return files


def _write_manifest(
    version: ModelVersion,
    manifest: dict[str, Any],
    *,
    also: list[str],
    then: Callable[[ModelVersion], None] | None = None,
) -> ModelVersion:
    """``manifest.json`` in storage, then the row (its manifest, size and ``also``): the last step of a change."""
    storage.put_bytes(
        version.object_prefix + MANIFEST,
        json.dumps(manifest, indent=2, default=str).encode(),
        content_type="application/json",
    )
    version.manifest = manifest
    version.size_bytes = sum(int(f.get("size", 0)) for f in manifest["files"].values())
    with transaction.atomic():
        version.save(update_fields=["manifest", "size_bytes", *also])
        if then is not None:
            then(version)
    return version


def attach_compiled(*, version: ModelVersion, folder: Path, fields: dict[str, Any]) -> ModelVersion:
    """Add a compiled artifact to a ready version (``compile_versions``): files first, then the manifest.

    The SavedModel's files are untouched; the new files are listed in the manifest with their sha256, which is
    written to storage and to the row last, so a crash midway leaves the version served as before.
    """
    compiled = sorted(p for p in (folder / "compiled").rglob("*") if p.is_file())
    files = dict(version.manifest.get("files") or {}) | _upload(version, folder, compiled)
    return _write_manifest(version, dict(version.manifest) | fields | {"files": files}, also=[])


def compile_published_version(*, version: ModelVersion) -> dict[str, Any]:
    """Compile a version published before compiled serving (or retry one that failed): its runtime afterwards.

    Downloads the SavedModel (each file checked against the manifest), compiles from the job's last checkpoint
    and runs the parity gate against that SavedModel (``training.trainer.run.compile_published``).
    """
    import tempfile

    # The trainer imports TensorFlow: only this operators' command reaches it, never the API or serving.
    from training.trainer.run import compile_published

    if version.status != ModelVersion.Status.READY or version.job is None:
        return {"runtime": "tensorflow", "runtime_reason": "not compiled: the version is not ready or has no job"}
    with tempfile.TemporaryDirectory(prefix="compile-") as tmp:
        folder = Path(tmp)
        for name, expected in (version.manifest.get("files") or {}).items():
            if name.startswith("compiled/"):
                continue
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as handle:
                storage.download_stream(version.object_prefix + name, handle)
            if storage.file_sha256(path) != expected.get("sha256"):
                raise ConflictError(f"{name} does not match the version's manifest.", code="integrity_error")
        fields = compile_published(version.job, folder)
        attach_compiled(version=version, folder=folder, fields=fields)
    return fields
