"""Fetch a published version to the local disk cache, verify it, load it: the only TensorFlow import here.

A version published with a compiled artifact (``manifest["runtime"] == "onnxruntime"``: it passed the parity gate
at publish time) is loaded from its two compiled files only and answered by ONNX Runtime with NumPy preprocessing
(``training.compiled``); TensorFlow is imported only when a version without one is first requested.

The manifest used for verification is the registry row's copy (the database
is the authority), never the ``manifest.json`` stored beside the files, so a
tampered object in the bucket cannot vouch for itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from core import storage
from serving import publishing
from serving.runtime.signatures import InputError, Signature
from training import compiled

logger = logging.getLogger(__name__)
_LOAD_LOCK = threading.Lock()  # one load at a time: loads are CPU-bound and the memory reading must be clean
_TENSORFLOW_STARTED = threading.Event()
# Versions whose folders a thread is fetching or loading from outside the model cache's own load thread (the
# explainers): the disk prune spares them, and holds this lock while it deletes, so none is deleted under a fetch.
_IN_USE: Counter[tuple[str, str, int]] = Counter()
_IN_USE_LOCK = threading.Lock()


class IntegrityError(Exception):
    """A downloaded file does not match the manifest: never served."""


class StorageUnavailable(Exception):
    """The object store (or the local disk cache) failed while fetching a version's files: answered 503, retried
    by the caller later; nothing about the version is wrong."""


@contextlib.contextmanager
def in_use(key: tuple[str, str, int]) -> Iterator[None]:
    """Mark a version's disk folder as in use for the block: ``prune_disk_cache`` never deletes it meanwhile
    (a prune already deleting finishes first)."""
    with _IN_USE_LOCK:
        _IN_USE[key] += 1
    try:
        yield
    finally:
        with _IN_USE_LOCK:
            _IN_USE[key] -= 1
            if _IN_USE[key] <= 0:
                del _IN_USE[key]


@dataclass(frozen=True)
class VersionSpec:
    """What the runtime needs to know of one published version (from the registry row)."""

    tenant_id: str
    tenant_slug: str
    model_name: str
    version: int
    object_prefix: str
    manifest: dict[str, Any]

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.tenant_id, self.model_name, self.version)

    @property
    def label(self) -> str:
        return f"{self.tenant_slug}/{self.model_name}/{self.version}"


class LoadedModel:
    """A SavedModel's ``serving_default`` function with the signature that converts rows to and from it."""

    runtime = compiled.RUNTIME_TENSORFLOW

    def __init__(self, spec: VersionSpec, saved, signature: Signature, memory_bytes: int, load_seconds: float):
        self.spec = spec
        self.signature = signature
        self._saved = saved  # keeps the function's variables alive
        self._function = saved.signatures["serving_default"]
        self._output = signature.check_function(self._function)
        self.memory_bytes = memory_bytes
        self.load_seconds = load_seconds

    def runs_inline(self, rows: int) -> bool:
        return False  # TensorFlow calls take milliseconds: always on the inference threads

    def predict(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One model call on a batch: input name -> array, to output name -> array (rows first)."""
        import tensorflow as tf

        tensors = {name: tf.constant(values) for name, values in columns.items()}
        try:
            raw = self._function(**tensors)[self._output].numpy()
        except tf.errors.InvalidArgumentError as exc:
            raise InputError(f"The model rejected the input: {exc.message.splitlines()[0][:300]}") from None
        return self.signature.decode_outputs(raw)


class CompiledVersion:
    """A version's compiled form (ONNX core, NumPy preprocessing), answering exactly like ``LoadedModel``.

    Small models answer a small batch in tens of microseconds, less than handing the batch to a thread and
    back costs; ``runs_inline`` says when a batch is cheap enough to compute on the event loop itself (measured
    at load: a call's fixed cost and its cost per row).
    """

    runtime = compiled.RUNTIME_COMPILED

    def __init__(self, spec: VersionSpec, model: compiled.CompiledModel, signature: Signature) -> None:
        self.spec = spec
        self.signature = signature
        self._model = model
        self.memory_bytes = 0
        self.load_seconds = 0.0
        self.call_seconds = float("inf")  # until measured: never inline
        self.row_seconds = float("inf")

    def predict(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.signature.decode_outputs(self._model.scores(columns))

    def measure(self) -> None:
        """Time a 1-row and a 16-row call (after a warm one): the fixed cost of a call and the cost per row."""
        one, sixteen = self.signature.example_batch(), self.signature.example_batch(16)
        self.predict(sixteen)
        single = _best_of(lambda: self.predict(one))
        many = _best_of(lambda: self.predict(sixteen))
        self.row_seconds = max(0.0, (many - single) / 15)
        self.call_seconds = max(0.0, single - self.row_seconds)

    def runs_inline(self, rows: int) -> bool:
        return self.call_seconds + rows * self.row_seconds <= settings.SERVING_INLINE_CALL_MICROSECONDS / 1e6


def _best_of(call, times: int = 5) -> float:
    best = float("inf")
    for _ in range(times):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


ServedModel = LoadedModel | CompiledVersion


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def local_dir(spec: VersionSpec) -> Path:
    return Path(settings.SERVING_CACHE_DIR) / spec.tenant_id / spec.model_name / str(spec.version)


def _safe_relative(name: str) -> bool:
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts and "\x00" not in name


def fetch(spec: VersionSpec, names: tuple[str, ...] | None = None) -> Path:
    """The version's files (all, or only ``names``) on local disk, each checked against the manifest's sha256.

    A cached copy is re-hashed before use (a few MB: milliseconds), so a
    corrupted disk cache is caught too; a bad copy is discarded and fetched again.
    """
    if spec.object_prefix != publishing.version_prefix(spec.tenant_id, spec.model_name, spec.version):
        raise IntegrityError(f"{spec.label}: its files are not under the version's own prefix")
    files: dict[str, dict[str, Any]] = spec.manifest.get("files") or {}
    if names is not None:
        files = {name: files[name] for name in names if name in files}
    if not files or not all(_safe_relative(name) for name in files):
        raise IntegrityError(f"{spec.label}: the manifest lists no usable files")
    target = local_dir(spec)
    if target.is_dir():
        # A version fetched for its compiled files only lacks the SavedModel's: explaining it needs them too.
        present = {name: expected for name, expected in files.items() if (target / name).is_file()}
        try:
            _verify(target, present, spec)
            if len(present) < len(files):
                _download(spec, {name: files[name] for name in files if name not in present}, into=target)
            os.utime(target)  # its last use, for the disk budget
            return target
        except IntegrityError:
            logger.error("%s: the disk cache failed verification; fetching it again", spec.label)
            shutil.rmtree(target, ignore_errors=True)
    _download(spec, files, into=target)
    return target


def _download(spec: VersionSpec, files: dict[str, dict[str, Any]], *, into: Path) -> None:
    """Download ``files`` beside ``into`` and verify them, then move them there: the whole folder when it does not
    exist yet, else file by file (each replaced atomically), so a reader never sees a file unverified."""
    staging = into.with_name(f".{into.name}-{uuid.uuid4().hex[:8]}")
    try:
        for name in files:
            path = staging / name
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "wb") as handle:
                    storage.download_stream(spec.object_prefix + name, handle)
            except (BotoCoreError, ClientError, OSError) as exc:
                logger.error("%s: fetching %s failed: %s", spec.label, name, exc)
                raise StorageUnavailable(f"{spec.label}: fetching {name} failed: {exc}") from exc
        _verify(staging, files, spec)
        into.parent.mkdir(parents=True, exist_ok=True)
        if not into.is_dir():
            try:
                staging.rename(into)
                return
            except OSError:  # another process made the folder first (perhaps with fewer files): add ours to it
                pass
        for name in files:
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, into / name)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


@dataclass(frozen=True)
class CachedVersion:
    path: Path
    size_bytes: int
    last_used: float


def _cached_versions(root: Path) -> list[CachedVersion]:
    """Every version folder (<tenant>/<model>/<version>) in the disk cache, with its size and last use."""
    found = []
    for path in root.glob("*/*/*"):
        if not path.is_dir() or path.name.startswith("."):  # staging folders of a fetch in progress
            continue
        try:
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            found.append(CachedVersion(path=path, size_bytes=size, last_used=path.stat().st_mtime))
        except FileNotFoundError:  # removed meanwhile (another process pruning)
            continue
    return found


def prune_disk_cache(*, keep: set[tuple[str, str, int]], budget_bytes: int | None = None) -> list[Path]:
    """Delete the files of versions not loaded now, least recently used first, until the cache fits its budget.

    Loaded versions (``keep``) and versions marked ``in_use`` (being fetched or loaded by an explainer) are never
    deleted, whatever the budget: their files are what a restart of a lease would verify against, or what a load
    is reading. A deleted version is simply fetched and verified again on its next request.
    """
    root = Path(settings.SERVING_CACHE_DIR)
    budget = settings.SERVING_CACHE_DISK_BUDGET_BYTES if budget_bytes is None else budget_bytes
    removed = []
    with _IN_USE_LOCK:  # nobody starts using a folder while this prune decides and deletes
        versions = _cached_versions(root)
        used = sum(version.size_bytes for version in versions)
        kept = {str(root / tenant / model / str(number)) for tenant, model, number in set(keep) | set(_IN_USE)}
        for version in sorted(versions, key=lambda v: v.last_used):
            if used <= budget:
                break
            if str(version.path) in kept:
                continue
            shutil.rmtree(version.path, ignore_errors=True)
            used -= version.size_bytes
            removed.append(version.path)
    if removed:
        logger.info("disk cache: removed %d unloaded versions; %d MB left", len(removed), used // 2**20)
    return removed


def _verify(folder: Path, files: dict[str, dict[str, Any]], spec: VersionSpec) -> None:
    for name, expected in files.items():
        path = folder / name
        if not path.is_file() or storage.file_sha256(path) != expected.get("sha256"):
            logger.error("%s: %s does not match its manifest sha256; refusing to load it", spec.label, name)
            raise IntegrityError(f"{spec.label}: {name} does not match the manifest")


def warm_up() -> None:
    """Start ONNX Runtime once at start-up (a few MB), so no user's request pays for its import.

    TensorFlow is started only by the first version that needs it (``start_tensorflow``).
    """
    compiled.session_providers()


def start_tensorflow() -> None:
    """Import TensorFlow and start its runtime once, before the first TensorFlow version or explainer is loaded."""
    if _TENSORFLOW_STARTED.is_set():
        return
    import tensorflow as tf

    # Each of the batches computed at once gets its share of the cores, so two batches run side by side
    # instead of one batch's threads fighting the other's (and the event loop) for every core.
    threads = settings.SERVING_TF_THREADS or max(1, (os.cpu_count() or 1) // settings.SERVING_CONCURRENT_BATCHES)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already ran in this process (a test that built models): keep its pools
        logger.info("TensorFlow was already initialised; keeping its thread pools")
    tf.constant([1.0]) + 1.0
    _TENSORFLOW_STARTED.set()


def _load_compiled(spec: VersionSpec, folder: Path, names: tuple[str, str]) -> CompiledVersion:
    model_file, spec_file = names
    model = compiled.CompiledModel(
        model_bytes=(folder / model_file).read_bytes(), spec=json.loads((folder / spec_file).read_bytes())
    )
    return CompiledVersion(spec, model, Signature.from_manifest(spec.manifest))


def _load_saved_model(spec: VersionSpec, folder: Path) -> LoadedModel:
    import tensorflow as tf

    saved = tf.saved_model.load(str(folder))
    return LoadedModel(spec, saved, Signature.from_manifest(spec.manifest), 0, 0.0)


def load(spec: VersionSpec) -> ServedModel:
    """Fetch, verify and load one version; the memory it takes is the process's growth while loading."""
    started = time.monotonic()
    names = compiled.compiled_files(spec.manifest)
    folder = fetch(spec, names)
    if names is None:
        start_tensorflow()
    with _LOAD_LOCK:
        before = _rss_bytes()
        model = _load_compiled(spec, folder, names) if names else _load_saved_model(spec, folder)
        model.predict(model.signature.example_batch())  # builds the kernels now, not on a user's request
        if isinstance(model, CompiledVersion):
            model.measure()  # inside the memory reading: its larger batch is what later batches will need too
        grown = _rss_bytes() - before
    files = spec.manifest["files"]
    size_on_disk = sum(int(files[name].get("size", 0)) for name in (names or files))
    model.memory_bytes = max(grown, size_on_disk)
    model.load_seconds = time.monotonic() - started
    logger.info(
        "loaded %s (%s) in %.2f s (%d MB)", spec.label, model.runtime, model.load_seconds, model.memory_bytes // 2**20
    )
    return model
