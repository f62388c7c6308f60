"""Loaded models in memory: lazy, single-flight loads, an LRU within a memory budget, pins and leases.

Everything here runs on the serving process's event loop thread; only the
load itself (download, verify, TensorFlow) runs in a worker thread. A
request holds a lease while it uses a model, so eviction and hot-swap
retirement never pull a model out from under an in-flight request: a
retired version is unloaded when its last lease ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

from serving.runtime.loader import ServedModel, VersionSpec

logger = logging.getLogger(__name__)
Key = tuple[str, str, int]
FAILED_LOAD_RETRY_SECONDS = 5.0


def freeze_long_lived_objects() -> None:
    """Move every object alive now (TensorFlow's, a loaded model's) out of the garbage collector's reach.

    A loaded TensorFlow holds hundreds of thousands of Python objects; a full collection walks them all and
    stops the event loop for tens of milliseconds, at a moment set by other tenants' allocations. Frozen
    objects are never scanned again, so a collection costs what the requests in flight allocated.
    """
    gc.freeze()


class CapacityError(Exception):
    """The model does not fit in the memory budget beside the models in use or pinned (answered 503)."""


@dataclass
class Counters:
    loads: int = 0
    load_failures: int = 0
    load_seconds: float = 0.0
    hits: int = 0
    misses: int = 0


@dataclass
class Entry:
    model: ServedModel
    leases: int = 0
    retired: bool = False
    last_used: float = field(default_factory=time.monotonic)


class ModelCache:
    def __init__(
        self,
        *,
        budget_bytes: int,
        pinned: set[str],
        load: Callable[[VersionSpec], ServedModel],
        load_executor: Executor,
        on_unload: Callable[[Key], None] | None = None,
        prune_disk: Callable[..., object] | None = None,
    ) -> None:
        self.budget_bytes = budget_bytes
        self.pinned = pinned  # "<tenant slug>/<model>/<version>"
        self._load = load
        self._load_executor = load_executor
        self._on_unload = on_unload
        self._prune_disk = prune_disk  # called as prune_disk(keep=<loaded keys>) after each load
        self._entries: OrderedDict[Key, Entry] = OrderedDict()
        self._loading: dict[Key, asyncio.Future] = {}
        self._failed: dict[Key, tuple[float, BaseException]] = {}  # a failed load is not retried for a while
        # Keyed by (tenant id, model, version): /metrics labels tenants by id, never by slug.
        self.counters: dict[Key, Counters] = {}  # versions loaded or being loaded (pruned on unload)
        self.unloads = 0

    @property
    def used_bytes(self) -> int:
        return sum(entry.model.memory_bytes for entry in self._entries.values())

    def loaded(self) -> list[ServedModel]:
        return [entry.model for entry in self._entries.values()]

    def is_loaded(self, key: Key) -> bool:
        return key in self._entries

    def model(self, key: Key) -> ServedModel:
        """A loaded model (callers hold a lease on it, so it is there)."""
        return self._entries[key].model

    def _counters(self, spec: VersionSpec) -> Counters:
        return self.counters.setdefault(spec.key, Counters())

    @contextlib.asynccontextmanager
    async def lease(self, spec: VersionSpec) -> AsyncIterator[Entry]:
        """The loaded version for the duration of one request (loaded first if needed)."""
        entry = await self._get(spec)
        entry.leases += 1
        try:
            yield entry
        finally:
            entry.leases -= 1
            entry.last_used = time.monotonic()
            if entry.retired and entry.leases == 0:
                self._unload(spec.key, reason="retired")

    async def _get(self, spec: VersionSpec) -> Entry:
        counters = self._counters(spec)
        entry = self._entries.get(spec.key)
        if entry is not None:
            counters.hits += 1
            entry.retired = False
            self._entries.move_to_end(spec.key)
            return entry
        counters.misses += 1
        failed = self._failed.get(spec.key)
        if failed is not None and failed[0] > time.monotonic():
            raise failed[1]  # a bad version costs one download per FAILED_LOAD_RETRY_SECONDS, not one per request
        while spec.key not in self._entries:
            pending = self._loading.get(spec.key)
            if pending is None:
                pending = asyncio.get_running_loop().create_future()
                self._loading[spec.key] = pending
                asyncio.get_running_loop().create_task(self._load_into(spec, pending))
            await asyncio.shield(pending)  # one load, however many requests wait; raises its error
        return self._entries[spec.key]

    async def _load_into(self, spec: VersionSpec, done: asyncio.Future) -> None:
        counters = self._counters(spec)
        loaded = False
        try:
            on_disk = sum(int(f.get("size", 0)) for f in (spec.manifest.get("files") or {}).values())
            self._make_room(on_disk, spec)
            model = await asyncio.get_running_loop().run_in_executor(self._load_executor, self._load, spec)
            self._make_room(model.memory_bytes, spec)
            self._entries[spec.key] = Entry(model=model)
            freeze_long_lived_objects()
            self._failed.pop(spec.key, None)
            counters.loads += 1
            counters.load_seconds += model.load_seconds
            done.set_result(None)
            loaded = True
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting request
            counters.load_failures += 1
            if not isinstance(exc, CapacityError):  # room may free up any moment; a bad file will not
                self._failed[spec.key] = (time.monotonic() + FAILED_LOAD_RETRY_SECONDS, exc)
            done.set_exception(exc)
            done.exception()  # retrieved here: nobody may be waiting any more
        finally:
            self._loading.pop(spec.key, None)
        if loaded and self._prune_disk is not None:
            await self._prune(keep=set(self._entries))

    async def _prune(self, *, keep: set[Key]) -> None:
        """Trim the disk cache to its budget, sparing the loaded versions; a failure costs disk, not answers."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._load_executor, lambda: self._prune_disk(keep=keep))
        except Exception:
            logger.exception("pruning the disk cache failed")

    def _make_room(self, needed: int, spec: VersionSpec) -> None:
        """Evict idle, unpinned models, least recently used first, until ``needed`` more bytes fit."""
        if self.used_bytes + needed <= self.budget_bytes:
            return
        for key in list(self._entries):
            entry = self._entries[key]
            if entry.leases == 0 and entry.model.spec.label not in self.pinned:
                self._unload(key, reason="evicted")
                if self.used_bytes + needed <= self.budget_bytes:
                    return
        raise CapacityError(
            f"{spec.label} needs {needed // 2**20} MB; the models in use or pinned leave "
            f"{max(0, self.budget_bytes - self.used_bytes) // 2**20} MB of the "
            f"{self.budget_bytes // 2**20} MB budget."
        )

    def retire(self, key: Key) -> None:
        """A version no route points at any more: unload it once its in-flight requests finish."""
        entry = self._entries.get(key)
        if entry is None or entry.model.spec.label in self.pinned:
            return
        if entry.leases == 0:
            self._unload(key, reason="retired")
        else:
            entry.retired = True

    def _unload(self, key: Key, *, reason: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self.counters.pop(key, None)  # an unloaded version's series go with it (metrics stay bounded)
        self.unloads += 1
        if self._on_unload is not None:
            self._on_unload(key)
        logger.info("unloaded %s (%s)", entry.model.spec.label, reason)
