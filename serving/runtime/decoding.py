"""Request bodies -> checked columns, without letting one tenant's large bodies stall the event loop.

``json.loads`` of a 4 MB body takes 70-100 ms and holds the interpreter lock the whole time, so a thread does
not help: every other request on the loop would wait as long. Bodies up to ``INLINE_BYTES`` (a prediction of a
few instances; well under a millisecond to parse) are decoded on the loop; larger ones go to a small pool of
processes (spawned, so they never inherit TensorFlow or the loop's threads; lowered in priority, so they yield
the cores to the loop) which parse, check shapes and counts against the signature, and send back only the
columns: at most ``max_instances`` rows. Each tenant has ``per_tenant`` large bodies decoding at a time (more
wait, unread, in a short bounded queue; beyond it 429) and the pool a bounded queue (503 beyond it), so a flood
from one tenant occupies at most its own share of the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager
from dataclasses import dataclass

from serving.runtime import protocols
from serving.runtime.http import HTTPError, parse_json
from serving.runtime.signatures import InputError, Signature

logger = logging.getLogger(__name__)

INLINE_BYTES = 16 * 1024
WORKER_NICENESS = 19
MAX_WAITING = 32  # a tenant's large requests waiting (unread) for its decoding slot; more get 429
WAIT_SECONDS = 10.0


def decode(
    body: bytes, protocol: str, signature: Signature, *, max_instances: int, header_length: int | None = None
) -> protocols.Parsed:
    """Parse and check one body: raises HTTPError (malformed JSON) or InputError (does not fit the signature).

    ``header_length``: KServe's ``Inference-Header-Content-Length``, the JSON part of a body that carries binary
    tensor data after it.
    """
    if protocol == "v1":
        return protocols.parse_tfserving(parse_json(body), signature, max_instances=max_instances)
    if header_length is None:
        return protocols.parse_v2(parse_json(body), signature, max_instances=max_instances)
    if header_length > len(body):
        raise HTTPError(400, f"Inference-Header-Content-Length {header_length} is longer than the body.")
    payload = parse_json(body[:header_length])
    return protocols.parse_v2(payload, signature, max_instances=max_instances, binary=body[header_length:])


def _decode_in_worker(body: bytes, protocol: str, signature: Signature, max_instances: int, header_length: int | None):
    """What a pool process runs: plain tuples back, so no exception has to survive pickling."""
    try:
        return "ok", decode(body, protocol, signature, max_instances=max_instances, header_length=header_length)
    except HTTPError as exc:
        return "http", exc.status, exc.message
    except InputError as exc:
        return "input", str(exc)
    except RecursionError:
        return "http", 400, "The body is nested too deeply."


def _lower_priority() -> None:
    """Run only on a core nothing else wants (SCHED_IDLE), else at the lowest nice: decoding one tenant's large
    body must never take a core from the event loop or a model call answering others."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or not permitted
        with contextlib.suppress(OSError):  # decoding still works, only without yielding the cores
            os.nice(WORKER_NICENESS)


@dataclass
class _TenantSlots:
    semaphore: asyncio.Semaphore
    waiting: int = 0


class Decoder:
    """Decodes request bodies inline or in the pool, with per-tenant and total limits on the pool's use."""

    def __init__(self, *, processes: int, per_tenant: int, max_instances: int) -> None:
        self.processes = processes
        self.per_tenant = per_tenant
        self.max_instances = max_instances
        self.max_in_flight = processes * 2  # running plus one queued per process; beyond that, 503
        self._tenants: dict[str, _TenantSlots] = {}
        self._total = 0
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.processes, mp_context=multiprocessing.get_context("spawn"), initializer=_lower_priority
            )
        return self._pool

    async def warm_up(self) -> None:
        """Start the pool's processes now, so the first large body does not wait for a spawn."""
        loop = asyncio.get_running_loop()
        try:
            pool = self._executor()
            await asyncio.gather(*(loop.run_in_executor(pool, os.getpid) for _ in range(self.processes)))
        except Exception:  # the first large body starts the pool again, or answers 503
            logger.warning("could not start the request-decoding processes", exc_info=True)

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    @staticmethod
    def is_large(declared_length: int | None) -> bool:
        """Bodies without a declared length are treated as large (they may be up to the body limit)."""
        return declared_length is None or declared_length > INLINE_BYTES

    @asynccontextmanager
    async def slot(self, tenant_id: str, declared_length: int | None) -> AsyncIterator[None]:
        """Hold one of the tenant's large-body slots while its body is read and decoded.

        Taken before the body is read. A request finding the tenant's slots busy waits for one
        without reading its body (the connection is paused, so a flood from one tenant slows to
        the pace of its own decodes and costs the loop nothing meanwhile); beyond
        ``MAX_WAITING`` waiters or ``WAIT_SECONDS`` it gets 429, and when the pool's
        queue is full, 503.
        """
        if not self.is_large(declared_length):
            yield
            return
        slots = self._tenants.get(tenant_id)
        if slots is None:
            slots = self._tenants[tenant_id] = _TenantSlots(asyncio.Semaphore(self.per_tenant))
        if slots.semaphore.locked() and slots.waiting >= MAX_WAITING:
            raise HTTPError(
                429,
                f"Too many large requests from this tenant at once: {self.per_tenant} decoded at a time and "
                f"{MAX_WAITING} waiting. Wait for the answers, or send fewer instances per request.",
                headers={"Retry-After": "1"},
            )
        slots.waiting += 1
        try:
            await asyncio.wait_for(slots.semaphore.acquire(), timeout=WAIT_SECONDS)
        except TimeoutError:
            raise HTTPError(
                429, "This tenant's large requests are queued too long; retry later.", headers={"Retry-After": "1"}
            ) from None
        finally:
            slots.waiting -= 1
        try:
            if self._total >= self.max_in_flight:
                raise HTTPError(
                    503, "The server is busy decoding large requests; retry shortly.", headers={"Retry-After": "1"}
                )
            self._total += 1
            try:
                yield
            finally:
                self._total -= 1
        finally:
            slots.semaphore.release()
            if not slots.waiting and not slots.semaphore.locked() and self._tenants.get(tenant_id) is slots:
                del self._tenants[tenant_id]

    async def decode(
        self, body: bytes, protocol: str, signature: Signature, header_length: int | None = None
    ) -> protocols.Parsed:
        if len(body) <= INLINE_BYTES:
            try:
                return decode(body, protocol, signature, max_instances=self.max_instances, header_length=header_length)
            except RecursionError:
                raise HTTPError(400, "The body is nested too deeply.") from None
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(
                self._executor(), _decode_in_worker, body, protocol, signature, self.max_instances, header_length
            )
        except BrokenProcessPool:
            logger.error("a request-decoding process died; starting a new pool")
            self.shutdown()
            raise HTTPError(
                503, "The server could not decode this request now; retry.", headers={"Retry-After": "1"}
            ) from None
        if result[0] == "ok":
            return result[1]
        if result[0] == "input":
            raise InputError(result[1])
        raise HTTPError(result[1], result[2])
