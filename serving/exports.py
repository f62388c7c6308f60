"""Models that leave the platform: a version's files, one streamed archive, and configs for other engines.

A version is stored in the layout TensorFlow Serving and KServe read
(``<base>/<model>/<version>/saved_model.pb``, ``variables/``, plus our ``manifest.json`` and ``compiled/``, which
those engines ignore), so leaving needs no conversion: a tenant downloads the files (presigned URLs straight from
S3, or one ``.tar.gz`` streamed through the API) or points an existing engine at a copy of the same layout.

The archive is written as it is read: tar headers and gzip by hand (``tarfile`` cannot yield mid-file), one
chunk of one object in memory at a time, each file checked against the manifest's size and sha256 as it passes.
A file that does not match ends the stream without the gzip trailer, so the client's ``tar`` fails loudly instead
of unpacking a corrupt model.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from django.conf import settings
from django.core.cache import cache
from django.http import HttpResponse, StreamingHttpResponse

from core import storage
from core.errors import ConflictError, ServiceError
from serving.models import ModelVersion, RegisteredModel
from serving.publishing import MANIFEST

_DOWNLOAD_SLOT_SECONDS = 3600  # a slot outlives any stream: a crashed process's slot frees itself


class ArchiveIntegrityError(Exception):
    """A stored file no longer matches the manifest; raised mid-stream, so the response ends truncated."""


@dataclass(frozen=True)
class VersionFile:
    path: str  # relative to the version's folder
    size: int
    sha256: str | None  # None for the manifest itself, which is not listed in itself

    def key(self, version: ModelVersion) -> str:
        return version.object_prefix + self.path


def version_files(*, version: ModelVersion) -> list[VersionFile]:
    """Every file of a published version, as its manifest lists them, and the manifest last."""
    listed = version.manifest.get("files") or {}
    files = [
        VersionFile(path, int(entry.get("size", 0)), entry.get("sha256")) for path, entry in sorted(listed.items())
    ]
    manifest_size = (storage.head(version.object_prefix + MANIFEST) or {}).get("ContentLength", 0)
    return [*files, VersionFile(MANIFEST, int(manifest_size), None)]


def presigned_files(*, version: ModelVersion) -> list[dict[str, Any]]:
    """Each file with a URL that GETs it from S3 directly (valid for ``S3_PRESIGNED_URL_TTL_SECONDS``)."""
    return [
        {"path": f.path, "size": f.size, "sha256": f.sha256, "url": storage.presigned_get_url(f.key(version))}
        for f in version_files(version=version)
    ]


def check_archive_size(*, version: ModelVersion) -> None:
    """Refuse, before any byte is read, an archive too big to stream through an API process."""
    if version.size_bytes > settings.MODEL_ARCHIVE_MAX_BYTES:
        raise ConflictError(
            f"Version {version.version} is {version.size_bytes} bytes, more than the archive limit; "
            "download its files from their presigned URLs instead.",
            code="archive_too_large",
            details={"size_bytes": version.size_bytes, "max_bytes": settings.MODEL_ARCHIVE_MAX_BYTES},
        )


def acquire_download_slot(*, tenant_id) -> str:
    """One of the tenant's ``MODEL_ARCHIVE_CONCURRENT_PER_TENANT`` concurrent archive streams, or a 429.

    An archive holds an API thread for as long as the client reads; without a bound, one tenant opening many slow
    downloads would take every thread. Counted in Django's cache (shared between processes on Redis).
    """
    key = f"model-archive-streams:{tenant_id}"
    cache.add(key, 0, timeout=_DOWNLOAD_SLOT_SECONDS)
    try:
        held = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=_DOWNLOAD_SLOT_SECONDS)
        held = 1
    cache.touch(key, _DOWNLOAD_SLOT_SECONDS)  # the count lives as long as its newest stream may
    if held > settings.MODEL_ARCHIVE_CONCURRENT_PER_TENANT:
        release_download_slot(key)
        raise ServiceError(
            "Too many model downloads at once; wait for one to finish or use the presigned file URLs.",
            code="too_many_downloads",
            status_code=429,
            details={"limit": settings.MODEL_ARCHIVE_CONCURRENT_PER_TENANT},
        )
    return key


def release_download_slot(key: str) -> None:
    try:
        if cache.decr(key) < 0:
            cache.set(key, 0, timeout=_DOWNLOAD_SLOT_SECONDS)
    except ValueError:
        pass


def iter_archive(*, version: ModelVersion, slot: str | None = None) -> Iterator[bytes]:
    """The version as ``<model>/<version>/…`` in a gzipped tar, chunk by chunk; frees ``slot`` when closed."""
    root = f"{version.model.name}/{version.version}"
    mtime = int(version.published_at.timestamp()) if version.published_at else 0
    gzip = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: a gzip header and trailer
    try:
        for file in version_files(version=version):
            info = tarfile.TarInfo(f"{root}/{file.path}")
            info.size, info.mtime, info.mode = file.size, mtime, 0o644
            yield gzip.compress(info.tobuf(format=tarfile.PAX_FORMAT))
            yield from _checked_chunks(version, file, gzip)
            yield gzip.compress(b"\0" * (-file.size % tarfile.BLOCKSIZE))
        yield gzip.compress(b"\0" * (2 * tarfile.BLOCKSIZE)) + gzip.flush()
    finally:
        if slot:
            release_download_slot(slot)


def archive_response(*, version: ModelVersion, head: bool = False) -> HttpResponse | StreamingHttpResponse:
    """The streamed archive as a download (API and dashboard), after the size and concurrency checks.

    ``head``: the headers alone. A server would otherwise build (and throw away) the whole archive for a HEAD.
    """
    check_archive_size(version=version)
    if head:
        response: HttpResponse | StreamingHttpResponse = HttpResponse(content_type="application/gzip")
    else:
        slot = acquire_download_slot(tenant_id=version.tenant_id)
        response = StreamingHttpResponse(iter_archive(version=version, slot=slot), content_type="application/gzip")
    response["Content-Disposition"] = f'attachment; filename="{version.model.name}-{version.version}.tar.gz"'
    return response


def _checked_chunks(version: ModelVersion, file: VersionFile, gzip) -> Iterator[bytes]:
    digest, seen = hashlib.sha256(), 0
    for chunk in storage.iter_chunks(file.key(version)):
        seen += len(chunk)
        if seen > file.size:
            break
        digest.update(chunk)
        compressed = gzip.compress(chunk)
        if compressed:
            yield compressed
    if seen != file.size or (file.sha256 and digest.hexdigest() != file.sha256):
        raise ArchiveIntegrityError(f"{version} {file.path} does not match its manifest")


# --- Configurations for other engines ------------------------------------------------------------------------


def default_base_path(model: RegisteredModel) -> str:
    """Where the platform keeps the model's numeric version folders: ``s3://<bucket>/tenants/<id>/models/<name>``."""
    return f"s3://{settings.S3_BUCKET}/" + storage.tenant_key(model.tenant_id, "models", model.name)


def served_versions(model: RegisteredModel) -> tuple[list[int], dict[str, int]]:
    """The ready versions an engine should load (those aliases or the traffic split name, else the newest) and
    the aliases as version labels."""
    ready = {v.version for v in model.versions.all() if v.status == ModelVersion.Status.READY}
    labels = {alias.name: alias.version.version for alias in model.aliases.all() if alias.version.version in ready}
    wanted = set(labels.values()) | {int(v) for v in (model.traffic or {}) if int(v) in ready}
    if not wanted and ready:
        wanted = {max(ready)}
    return sorted(wanted), dict(sorted(labels.items()))


def tf_serving_config(*, model: RegisteredModel, base_path: str) -> str:
    """A TensorFlow Serving ``model_config_list`` (protobuf text format) for ``--model_config_file``."""
    versions, labels = served_versions(model)
    lines = [
        f"# TensorFlow Serving config for {model.name}: tensorflow_model_server --model_config_file=<this file>",
        "# The base path holds one numeric folder per version (saved_model.pb, variables/), as published.",
        "# For S3-compatible storage set S3_ENDPOINT, AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.",
    ]
    if model.traffic:
        lines.append(f"# The platform splits traffic {model.traffic}; TensorFlow Serving cannot: route by label.")
    lines += [
        "model_config_list {",
        "  config {",
        f'    name: "{model.name}"',
        f'    base_path: "{base_path}"',
        '    model_platform: "tensorflow"',
    ]
    if versions:
        lines.append("    model_version_policy { specific { " + " ".join(f"versions: {v}" for v in versions) + " } }")
    lines += [f'    version_labels {{ key: "{name}" value: {number} }}' for name, number in labels.items()]
    lines += ["  }", "}", ""]
    return "\n".join(lines)


def kserve_inference_service(*, model: RegisteredModel, base_path: str) -> str:
    """A KServe ``InferenceService`` (YAML) on the TensorFlow Serving runtime, reading the same layout.

    KServe's TensorFlow runtime serves the newest numeric folder under ``storageUri``; the version the platform
    would answer with (the ``production`` alias, else the newest ready one) is named in an annotation so an
    operator can copy just that folder when older versions must not be served.
    """
    versions, labels = served_versions(model)
    chosen = labels.get("production") or (versions[-1] if versions else None)
    name = re.sub(r"[^a-z0-9-]", "-", model.name).strip("-")
    name = (name if name[:1].isalpha() else f"m-{name}")[:63].rstrip("-")
    document = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "annotations": {
                "mlplatform/model": model.name,
                "mlplatform/version": str(chosen) if chosen else "",
                "mlplatform/aliases": ",".join(f"{k}={v}" for k, v in labels.items()),
            },
        },
        "spec": {
            "predictor": {
                # A service account carrying the S3 credentials and endpoint annotations (KServe's S3 convention).
                "serviceAccountName": "mlplatform-s3",
                "model": {
                    "modelFormat": {"name": "tensorflow"},
                    "runtime": "kserve-tensorflow-serving",
                    "protocolVersion": "v1",
                    "storageUri": base_path,
                },
            }
        },
    }
    return yaml.safe_dump(document, sort_keys=False)


def export_config(*, model: RegisteredModel, engine: str, base_path: str | None) -> str:
    path = base_path or default_base_path(model)
    if engine == "kserve":
        return kserve_inference_service(model=model, base_path=path)
    return tf_serving_config(model=model, base_path=path)
