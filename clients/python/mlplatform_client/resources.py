"""Resource groups of the API: ``client.datasets``, ``client.jobs``, ``client.models``.

Each method is one documented endpoint (``ROUTES`` lists them; a test checks each against the OpenAPI schema) or a
small loop over them (uploads, waiting for a dataset, following a job, downloading a version).
"""

from __future__ import annotations

import hashlib
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

from mlplatform_client import errors, uploads
from mlplatform_client.api_types import (
    Dataset,
    DatasetList,
    ModelCard,
    ModelVersion,
    ModelVersionList,
    RegisteredModel,
    TrainingJob,
    VersionFiles,
)

if TYPE_CHECKING:
    from mlplatform_client.client import Client

# Every (METHOD, path template) the SDK calls, as the OpenAPI schema writes them.
ROUTES: frozenset[tuple[str, str]] = frozenset(
    {
        ("GET", "/api/v1/datasets"),
        ("POST", "/api/v1/datasets"),
        ("GET", "/api/v1/datasets/{id}"),
        ("DELETE", "/api/v1/datasets/{id}"),
        ("GET", "/api/v1/datasets/{id}/preview"),
        ("GET", "/api/v1/datasets/{id}/privacy"),
        ("PUT", "/api/v1/datasets/{id}/privacy"),
        ("POST", "/api/v1/datasets/uploads"),
        ("GET", "/api/v1/datasets/uploads/{id}"),
        ("POST", "/api/v1/datasets/uploads/{id}/part-urls"),
        ("POST", "/api/v1/datasets/uploads/{id}/complete"),
        ("GET", "/api/v1/templates"),
        ("GET", "/api/v1/jobs"),
        ("POST", "/api/v1/jobs"),
        ("GET", "/api/v1/jobs/{id}"),
        ("POST", "/api/v1/jobs/{id}/cancel"),
        ("GET", "/api/v1/jobs/{id}/metrics"),
        ("GET", "/api/v1/jobs/{id}/logs"),
        ("GET", "/api/v1/models"),
        ("GET", "/api/v1/models/{name}"),
        ("PUT", "/api/v1/models/{name}/aliases/{alias}"),
        ("DELETE", "/api/v1/models/{name}/aliases/{alias}"),
        ("POST", "/api/v1/models/{name}/aliases/{alias}/rollback"),
        ("PUT", "/api/v1/models/{name}/traffic"),
        ("GET", "/api/v1/models/{name}/export"),
        ("GET", "/api/v1/models/{model_name}/versions"),
        ("GET", "/api/v1/models/{model_name}/versions/{version}"),
        ("POST", "/api/v1/models/{model_name}/versions/{version}/archive"),
        ("GET", "/api/v1/models/{model_name}/versions/{version}/files"),
        ("GET", "/api/v1/models/{model_name}/versions/{version}/download"),
        ("GET", "/api/v1/models/{model_name}/versions/{version}/card"),
        ("GET", "/api/v1/tenant"),
    }
)
DEFAULT_MULTIPART_THRESHOLD = 64 * 1024 * 1024
TERMINAL_JOB_STATES = frozenset({"succeeded", "failed", "cancelled"})


def _p(value: Any) -> str:
    return quote(str(value), safe="")


class _Group:
    def __init__(self, client: Client) -> None:
        self.client = client


class DatasetsAPI(_Group):
    def list(self, *, name: str | None = None, status: str | None = None) -> list[DatasetList]:
        return list(self.client.paginate("/api/v1/datasets", name=name, status=status))

    def get(self, dataset_id: str) -> Dataset:
        return self.client.get(f"/api/v1/datasets/{_p(dataset_id)}")

    def delete(self, dataset_id: str) -> None:
        self.client.delete(f"/api/v1/datasets/{_p(dataset_id)}")

    def preview(self, dataset_id: str, *, rows: int = 10) -> dict[str, Any]:
        return self.client.get(f"/api/v1/datasets/{_p(dataset_id)}/preview", rows=rows)

    def privacy(self, dataset_id: str) -> dict[str, Any]:
        """The dataset's privacy budget, what its private jobs spent and what is left."""
        return self.client.get(f"/api/v1/datasets/{_p(dataset_id)}/privacy")

    def set_privacy_budget(self, dataset_id: str, *, epsilon: float | None, delta: float | None) -> dict[str, Any]:
        """Set the budget (both numbers) or clear it (both None); admins only."""
        return self.client.put(f"/api/v1/datasets/{_p(dataset_id)}/privacy", {"epsilon": epsilon, "delta": delta})

    def upload(
        self,
        path: str | Path,
        *,
        name: str,
        format: str | None = None,
        label_column: str = "",
        column_tags: dict[str, str] | None = None,
        pii_mode: str | None = None,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        concurrency: int = 4,
        resume: bool = True,
        progress: uploads.Progress | None = None,
    ) -> Dataset:
        """Upload a file as the next version of dataset ``name``: one streamed POST below ``multipart_threshold``
        bytes, a presigned multipart upload (``concurrency`` parts at a time, resumable) at or above it.

        Columns tagged PII (``column_tags={"email": "pii"}``) always take the direct path: the API must rewrite
        them before anything is stored. Returns the dataset as created (``validating``); see :meth:`wait`.
        """
        path = Path(path)
        fields = uploads.form_fields(
            name=name, fmt=format, label_column=label_column, column_tags=column_tags, pii_mode=pii_mode
        )
        if path.stat().st_size >= multipart_threshold and not column_tags:
            return uploads.upload_multipart(
                self.client, path, fields=fields, progress=progress, concurrency=concurrency, resume=resume
            )
        return uploads.upload_direct(self.client, path, fields=fields, progress=progress)

    def wait(self, dataset_id: str, *, timeout: float = 600, interval: float = 1.0) -> Dataset:
        """Poll until validation ends: the ``ready`` dataset, or :class:`DatasetInvalidError`."""
        deadline = time.monotonic() + timeout
        while True:
            dataset = self.get(dataset_id)
            if dataset["status"] == "ready":
                return dataset
            if dataset["status"] == "invalid":
                raise errors.DatasetInvalidError(dict(dataset))
            if time.monotonic() > deadline:
                raise TimeoutError(f"dataset {dataset_id} still {dataset['status']} after {timeout:.0f} s")
            time.sleep(interval)


class JobsAPI(_Group):
    def templates(self) -> list[dict[str, Any]]:
        return self.client.get("/api/v1/templates")

    def list(
        self, *, status: str | None = None, model_name: str | None = None, dataset: str | None = None
    ) -> list[TrainingJob]:
        return list(self.client.paginate("/api/v1/jobs", status=status, model_name=model_name, dataset=dataset))

    def create(
        self,
        *,
        dataset: str,
        template: str,
        model_name: str,
        label_column: str,
        params: dict[str, Any] | None = None,
        feature_columns: list[str] | None = None,
        validation_split: float | None = None,
        seed: int | None = None,
        max_runtime_seconds: int | None = None,
        privacy: dict[str, Any] | None = None,
    ) -> TrainingJob:
        body: dict[str, Any] = {
            "dataset": dataset,
            "template": template,
            "model_name": model_name,
            "label_column": label_column,
            "params": params or {},
        }
        optional = {
            "feature_columns": feature_columns,
            "validation_split": validation_split,
            "seed": seed,
            "max_runtime_seconds": max_runtime_seconds,
            "privacy": privacy,
        }
        body |= {k: v for k, v in optional.items() if v is not None}
        return self.client.post("/api/v1/jobs", body)

    def get(self, job_id: str) -> TrainingJob:
        return self.client.get(f"/api/v1/jobs/{_p(job_id)}")

    def cancel(self, job_id: str) -> TrainingJob:
        return self.client.post(f"/api/v1/jobs/{_p(job_id)}/cancel")

    def metrics(self, job_id: str) -> dict[str, Any]:
        """``{"job", "epochs": [{"epoch": 1, "loss": ..., "val_loss": ...}, ...], "final": {...}}``."""
        return self.client.get(f"/api/v1/jobs/{_p(job_id)}/metrics")

    def logs(self, job_id: str, *, lines: int = 100) -> list[dict[str, Any]]:
        return self.client.get(f"/api/v1/jobs/{_p(job_id)}/logs", lines=lines)["lines"]

    def follow(
        self, job_id: str, *, interval: float = 1.0, timeout: float | None = None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Poll a job until it ends, yielding ``("progress", job)`` when its state or progress changes,
        ``("epoch", row)`` for each finished epoch's metrics (once, in order) and finally ``("done", job)``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen_epochs: set[int] = set()
        last = None
        while True:
            job = self.get(job_id)
            for row in self.metrics(job_id)["epochs"]:
                if row["epoch"] not in seen_epochs:
                    seen_epochs.add(row["epoch"])
                    yield "epoch", row
            marker = (job["status"], repr(job.get("progress")))
            if marker != last:
                last = marker
                yield "progress", job
            if job["status"] in TERMINAL_JOB_STATES:
                yield "done", job
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:.0f} s")
            time.sleep(interval)

    def wait(self, job_id: str, *, interval: float = 1.0, timeout: float | None = None) -> TrainingJob:
        """The job once it ends; :class:`JobFailedError` unless it succeeded."""
        for event, job in self.follow(job_id, interval=interval, timeout=timeout):
            if event == "done":
                if job["status"] != "succeeded":
                    raise errors.JobFailedError(dict(job))
                return job  # type: ignore[return-value]
        raise AssertionError("unreachable")


class ModelsAPI(_Group):
    def list(self) -> list[RegisteredModel]:
        return list(self.client.paginate("/api/v1/models"))

    def get(self, name: str) -> RegisteredModel:
        return self.client.get(f"/api/v1/models/{_p(name)}")

    def versions(self, name: str) -> list[ModelVersionList]:
        return list(self.client.paginate(f"/api/v1/models/{_p(name)}/versions"))

    def version(self, name: str, version: int) -> ModelVersion:
        return self.client.get(f"/api/v1/models/{_p(name)}/versions/{int(version)}")

    def set_alias(self, name: str, alias: str, version: int) -> RegisteredModel:
        return self.client.put(f"/api/v1/models/{_p(name)}/aliases/{_p(alias)}", {"version": int(version)})

    def promote(self, name: str, version: int, *, alias: str = "production") -> RegisteredModel:
        """Point ``alias`` (``production`` by default) at ``version``; serving follows within seconds."""
        return self.set_alias(name, alias, version)

    def delete_alias(self, name: str, alias: str) -> None:
        self.client.delete(f"/api/v1/models/{_p(name)}/aliases/{_p(alias)}")

    def rollback(self, name: str, *, alias: str = "production") -> RegisteredModel:
        """Move ``alias`` back to the version it pointed at before its last move (409 when there is none)."""
        return self.client.post(f"/api/v1/models/{_p(name)}/aliases/{_p(alias)}/rollback")

    def set_traffic(self, name: str, weights: dict[int | str, int]) -> RegisteredModel:
        return self.client.put(
            f"/api/v1/models/{_p(name)}/traffic", {"weights": {str(k): v for k, v in weights.items()}}
        )

    def archive(self, name: str, version: int) -> ModelVersion:
        return self.client.post(f"/api/v1/models/{_p(name)}/versions/{int(version)}/archive")

    def files(self, name: str, version: int) -> VersionFiles:
        """The version's files with presigned GET URLs: ``{"model", "version", "expires_at", "files": [...]}``."""
        return self.client.get(f"/api/v1/models/{_p(name)}/versions/{int(version)}/files")

    def card(self, name: str, version: int, *, markdown: bool = False) -> ModelCard | str:
        """The version's model card: data lineage (dataset, sha256, PII handling), template and params, metrics,
        the privacy statement, the explanation method and global explanations; pieces an older version lacks are
        ``None`` and named in ``absent``. ``markdown=True``: the card as Markdown text, to paste into a review."""
        path = f"/api/v1/models/{_p(name)}/versions/{int(version)}/card"
        if markdown:
            return self.client.request("GET", path, params={"format": "markdown"}).text
        return self.client.get(path)

    def export(self, name: str, *, engine: str = "tf-serving", base_path: str | None = None) -> str:
        """Configuration for an existing engine reading our S3 layout: TF Serving's ``model_config_list``
        (``engine="tf-serving"``) or a KServe ``InferenceService`` (``engine="kserve"``); ``base_path`` points it
        at your own copy of the version folders instead of the platform's bucket."""
        params = {"engine": engine, "base_path": base_path}
        return self.client.request("GET", f"/api/v1/models/{_p(name)}/export", params=params).text

    def download(
        self,
        name: str,
        version: int,
        destination: str | Path = ".",
        *,
        archive: str | Path | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Path:
        """Download a version and check every file against the registry's manifest (sha256 and size).

        Unpacked under ``destination`` as ``<name>/<version>/…`` (TensorFlow Serving's layout: point a model base
        path at ``destination/<name>``); with ``archive``, the ``.tar.gz`` is also kept there. Returns the version
        folder.
        """
        expected = (self.version(name, version).get("manifest") or {}).get("files") or {}
        response = self.client.request(
            "GET", f"/api/v1/models/{_p(name)}/versions/{int(version)}/download", stream=True, timeout=600
        )
        # On disk, never in memory (an archive may be gigabytes): the kept archive, or a temporary file.
        opened = Path(archive).open("w+b") if archive else tempfile.TemporaryFile(prefix="mlp-download-")  # noqa: SIM115
        root = Path(destination)
        with opened as sink, response:
            for chunk in response.iter_content(uploads.CHUNK):
                sink.write(chunk)
                if progress:
                    progress(len(chunk))
            sink.seek(0)
            with tarfile.open(fileobj=sink, mode="r:gz") as tar:
                members = _checked_members(tar, name, int(version))
                # The members are checked above; the "data" filter (Python 3.11.4+) checks them again.
                safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(root, members=members, **safe)  # noqa: S202 - members checked
        folder = root / name / str(int(version))
        verify_files(folder, expected)
        return folder

    def download_files(self, name: str, version: int, destination: str | Path = ".") -> Path:
        """Like :meth:`download`, file by file from the presigned URLs of :meth:`files` (straight from storage,
        no archive built by the API); every file checked against the manifest. Returns the version folder."""
        expected = (self.version(name, version).get("manifest") or {}).get("files") or {}
        listing = self.files(name, version)
        folder = Path(destination) / name / str(int(version))
        for entry in listing["files"]:
            relative = PurePosixPath(entry["path"])
            if relative.is_absolute() or ".." in relative.parts:
                raise errors.MLPlatformError(f"unexpected file path {entry['path']!r}")
            download_file(entry["url"], folder.joinpath(*relative.parts), size=entry.get("size"))
        verify_files(folder, expected)
        return folder


def _checked_members(tar: tarfile.TarFile, name: str, version: int) -> list[tarfile.TarInfo]:
    """Only regular files and folders under ``<name>/<version>/``: nothing may land elsewhere."""
    prefix = PurePosixPath(name, str(version))
    members = []
    for member in tar.getmembers():
        path = PurePosixPath(member.name)
        if path.is_absolute() or ".." in path.parts or not (path == prefix or prefix in path.parents):
            raise errors.MLPlatformError(f"the archive holds an unexpected member: {member.name!r}")
        if not (member.isfile() or member.isdir()):
            raise errors.MLPlatformError(f"the archive holds a link or device: {member.name!r}")
        members.append(member)
    return members


def verify_files(folder: Path, expected: dict[str, dict[str, Any]]) -> None:
    """Every file the manifest lists is in ``folder`` with its size and sha256."""
    for relative, spec in expected.items():
        path = folder / relative
        if not path.is_file():
            raise errors.MLPlatformError(f"{relative} is missing from the download")
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while block := handle.read(uploads.CHUNK):
                digest.update(block)
        if spec.get("size") is not None and path.stat().st_size != int(spec["size"]):
            raise errors.MLPlatformError(f"{relative}: {path.stat().st_size} bytes, the manifest says {spec['size']}")
        if spec.get("sha256") and digest.hexdigest() != spec["sha256"]:
            raise errors.MLPlatformError(f"{relative}: sha256 differs from the manifest")


def download_file(url: str, target: Path, *, size: int | None = None) -> None:
    """One presigned GET (no API key) to ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with requests.get(url, stream=True, timeout=300) as response:
        if response.status_code != 200:
            raise errors.TransportError(f"storage answered {response.status_code} for {target.name}")
        with target.open("wb") as out:
            for chunk in response.iter_content(uploads.CHUNK):
                out.write(chunk)
    if size is not None and target.stat().st_size != size:
        raise errors.MLPlatformError(f"{target}: {target.stat().st_size} bytes, expected {size}")
