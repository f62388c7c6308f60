"""The serving process's ASGI application: TensorFlow Serving REST and KServe v2 over the registry.

Run it with ``manage.py serve_models`` (uvicorn). Every prediction path
is: the caller's key (``predict`` scope, tenant active) -> the tenant's rate
limit (one token, before the body is read) -> the declared body size -> the
model name inside that tenant only -> a version (named, labelled, traffic
split, ``production`` or latest) -> for a large body, one of the tenant's
decoding slots -> the body read, parsed and checked against the version's
signature, shapes and counts before any conversion (large bodies in a process
pool, off the event loop; see ``decoding``) -> the rest of the rate limit ->
a lease on the loaded model -> the batcher -> the answer, metered. Errors are ``{"error": "..."}`` with a 4xx
(or 503 for capacity); the process keeps serving everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.db import connections
from django.utils import timezone

from core import logs
from serving import services
from serving.runtime import access, loader, protocols
from serving.runtime import explaining as explaining_
from serving.runtime.batcher import Batcher
from serving.runtime.cache import CapacityError, ModelCache, freeze_long_lived_objects
from serving.runtime.decoding import Decoder
from serving.runtime.http import (
    HTTPError,
    body_left_unread,
    check_declared_length,
    encode,
    header,
    read_body,
    send_bytes,
    send_json,
)
from serving.runtime.limits import Meter, Tarpit, rate_limiter
from serving.runtime.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from serving.runtime.metrics import Metrics
from serving.runtime.metrics import authorized as metrics_authorized
from serving.runtime.routing import Router, choose_version
from serving.runtime.signatures import InputError, Signature
from serving.selectors import KeyGrant, ModelRoutes

logger = logging.getLogger(__name__)
DB_THREADS = 4  # the pool every database call of the serving process goes through (routes, keys, metering)

_V1 = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<action>:[a-z]+|/metadata)?$"
)
_V2 = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<action>/infer|/ready)?$")
SERVER_NAME = "mlplatform-serving"
TARPIT_SECONDS = 0.5  # a tenant's 429s wait this long before they are sent (see limits.Tarpit)
TARPIT_PER_TENANT = 64


def _inference_header_length(scope: dict[str, Any]) -> int | None:
    """KServe's ``Inference-Header-Content-Length``: the JSON part of a body with binary tensor data after it."""
    raw = header(scope, b"inference-header-content-length")
    if raw is None:
        return None
    if not (raw.isdigit() and len(raw) <= 12):
        raise HTTPError(400, "Inference-Header-Content-Length must be a number of bytes.")
    return int(raw)


def _version_number(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9):
        raise HTTPError(404, f"No version '{raw[:40]}'; versions are whole numbers.")
    return int(raw)


class ServingApp:
    def __init__(self) -> None:
        self.max_instances = settings.SERVING_MAX_INSTANCES
        self.max_body = settings.SERVING_MAX_BODY_BYTES
        self._db = ThreadPoolExecutor(DB_THREADS, thread_name_prefix="serving-db")
        self._infer = ThreadPoolExecutor(settings.SERVING_CONCURRENT_BATCHES, thread_name_prefix="serving-infer")
        self._loads = ThreadPoolExecutor(1, thread_name_prefix="serving-load")
        self.cache = ModelCache(
            budget_bytes=settings.SERVING_MEMORY_BUDGET_BYTES,
            pinned=set(settings.SERVING_PINNED_MODELS),
            load=loader.load,
            load_executor=self._loads,
            on_unload=self._forget,
            prune_disk=self._prune_disk,
        )
        self.router = Router(
            ttl=settings.SERVING_ROUTE_TTL_SECONDS, db_executor=self._db, on_routes_changed=self._routes_changed
        )
        self.limiter = rate_limiter(settings.SERVING_RATE_LIMIT_URL)
        self.tarpit = Tarpit(seconds=TARPIT_SECONDS, per_tenant=TARPIT_PER_TENANT)
        self.decoder = Decoder(
            processes=settings.SERVING_DECODE_PROCESSES,
            per_tenant=settings.SERVING_DECODES_PER_TENANT,
            max_instances=self.max_instances,
        )
        self.meter = Meter()
        # Explanations: their own executor, explainers and slots, never the predictions' batcher or threads.
        self.explain_max_instances = settings.SERVING_EXPLAIN_MAX_INSTANCES
        self.explain_max_bytes = settings.SERVING_EXPLAIN_MAX_BYTES
        self._explain_pool = ThreadPoolExecutor(settings.SERVING_EXPLAIN_THREADS, thread_name_prefix="serving-explain")
        self.explainers = explaining_.Explainers(
            max_count=settings.SERVING_EXPLAINERS_MAX, max_bytes=self.explain_max_bytes
        )
        self.explain_slots = explaining_.ExplainSlots(
            per_tenant=settings.SERVING_EXPLAINS_PER_TENANT, total=settings.SERVING_EXPLAINS_IN_FLIGHT
        )
        self.metrics = Metrics()
        self.access_log = settings.SERVING_ACCESS_LOG
        self._referenced: dict[tuple[str, str], set[int]] = {}
        self._batchers: dict[tuple[str, str, int], Batcher] = {}
        self._signatures: dict[tuple[str, str, int], Signature] = {}
        self._flusher: asyncio.Task | None = None
        self._watcher: asyncio.Task | None = None
        self._decoder_warm_up: asyncio.Task | None = None
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.started_at = timezone.now()
        self.ready = False

    # --- ASGI ---------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        protocol = "v2" if scope["path"].startswith("/v2") else "v1"
        status = 500
        entry = access.Entry(scope) if self.access_log else None
        if entry is not None:
            send = entry.wrap(send)  # echoes X-Request-ID, counts the bytes sent
        try:
            status = await self._dispatch(scope, receive, send)
        except HTTPError as exc:
            status = exc.status
            headers = exc.headers | ({"Connection": "close"} if body_left_unread(scope) else {})
            await send_json(send, exc.status, {"error": exc.message}, headers)
        except Exception:
            logger.exception("serving error on %s %s", scope["method"], scope["path"])
            await send_json(send, 500, {"error": "Internal error; it has been logged."})
        finally:
            seconds = time.perf_counter() - started
            self.metrics.request(protocol=protocol, status=status, seconds=seconds)
            if entry is not None:
                entry.log(status=status, seconds=seconds)

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._loads, loader.warm_up)
        freeze_long_lived_objects()
        await self.router.refresh_suspended()
        await self.report()
        self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())
        self._watcher = asyncio.get_running_loop().create_task(self._watch_suspensions())
        self._decoder_warm_up = asyncio.get_running_loop().create_task(self.decoder.warm_up())
        self.ready = True

    async def shutdown(self) -> None:
        self.ready = False
        for task in (self._flusher, self._watcher):
            if task is not None:
                task.cancel()
        await self.flush_usage()
        await self.limiter.close()
        self.decoder.shutdown()
        self._explain_pool.shutdown(wait=False, cancel_futures=True)
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._db, lambda: services.forget_serving_process(name=self.name)
            )
        except Exception:
            logger.warning("could not remove this serving process's report", exc_info=True)
        close_pool_connections(self._db, DB_THREADS)

    async def _dispatch(self, scope: dict[str, Any], receive: Callable, send: Callable) -> int:
        path = scope["path"]
        if path in {"/healthz", "/v2/health/live"}:
            return await self._reply(send, 200, {"live": True} if path.startswith("/v2") else {"status": "ok"})
        if path == "/v2/health/ready":
            return await self._reply(send, 200 if self.ready else 503, {"ready": self.ready})
        if path == "/metrics":
            return await self._metrics(scope, send)
        if path == "/v2":
            return await self._reply(send, 200, {"name": SERVER_NAME, "version": "1", "extensions": []})
        if match := _V1.match(path):
            return await self._v1(scope, receive, send, **match.groupdict())
        if match := _V2.match(path):
            return await self._v2(scope, receive, send, **match.groupdict())
        raise HTTPError(404, f"No endpoint {path[:200]}.")

    async def _reply(self, send: Callable, status: int, body: Any, headers: dict[str, str] | None = None) -> int:
        await send_json(send, status, body, headers)
        return status

    async def _metrics(self, scope: dict[str, Any], send: Callable) -> int:
        if not metrics_authorized(header(scope, b"authorization")):
            raise HTTPError(401, "Send the metrics token as 'Authorization: Bearer <token>'.")
        await send_bytes(send, 200, self.metrics.render(self.cache, self.explainers), METRICS_CONTENT_TYPE, {})
        return 200

    # --- TensorFlow Serving REST --------------------------------------------

    async def _v1(self, scope, receive, send, *, name: str, version: str | None, label: str | None, action) -> int:
        if action == ":predict":
            _require(scope, "POST")
            return await self._predict(scope, receive, send, "v1", name, _version_number(version), label)
        if action == ":explain":
            _require(scope, "POST")
            return await self._explain(scope, receive, send, name, _version_number(version), label)
        if action is not None and action != "/metadata":
            raise HTTPError(400, f"Unsupported method '{action[1:]}'; this server answers :predict and :explain.")
        _require(scope, "GET")
        grant = await self.router.caller(header(scope, b"authorization"), _client(scope))
        logs.set_tenant(grant.tenant_id)  # this request's log lines, the access line too
        routes = await self.router.routes(grant, name)
        if action == "/metadata":
            number = choose_version(routes, version=_version_number(version), label=label)
            spec = await self.router.spec(grant, routes, number)
            return await self._reply(
                send, 200, protocols.tfserving_metadata(self._signature(spec), model_name=name, version=number)
            )
        if version is not None or label is not None:
            numbers = [choose_version(routes, version=_version_number(version), label=label)]
        else:
            numbers = sorted(routes.ready_versions(), reverse=True)
        states = [
            {"version": str(n), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            for n in numbers
        ]
        return await self._reply(send, 200, {"model_version_status": states})

    # --- KServe Open Inference Protocol v2 ----------------------------------

    async def _v2(self, scope, receive, send, *, name: str, version: str | None, action: str | None) -> int:
        if action == "/infer":
            _require(scope, "POST")
            return await self._predict(scope, receive, send, "v2", name, _version_number(version), None)
        _require(scope, "GET")
        grant = await self.router.caller(header(scope, b"authorization"), _client(scope))
        logs.set_tenant(grant.tenant_id)  # this request's log lines, the access line too
        routes = await self.router.routes(grant, name)
        number = choose_version(routes, version=_version_number(version))
        if action == "/ready":
            return await self._reply(send, 200, {"name": name, "ready": True})
        spec = await self.router.spec(grant, routes, number)
        ready = sorted(routes.ready_versions())
        return await self._reply(
            send, 200, protocols.v2_metadata(self._signature(spec), model_name=name, versions=ready)
        )

    # --- Predictions and explanations ----------------------------------------
    # Both paths take the same steps (``_admitted``, ``_resolved``, ``_parsed``, ``_answering``); they differ only
    # in what computes the answer: the batcher on a leased model (predictions) or an explainer on its own executor.

    async def _admitted(self, scope) -> KeyGrant:
        """The caller's grant (``predict`` scope), its first rate-limit token taken before the body is read."""
        grant = await self.router.caller(header(scope, b"authorization"), _client(scope))
        logs.set_tenant(grant.tenant_id)  # this request's log lines, the access line too
        # The rate limit before the body is read: every request spends a token whatever its answer, and one
        # refused here costs neither reading nor parsing. Its other instances are taken once they are counted.
        try:
            await self.limiter.admit(grant.tenant_id, per_minute=grant.predictions_per_minute)
        except HTTPError:
            await self.tarpit.hold(grant.tenant_id)
            raise
        return grant

    async def _resolved(self, scope, grant: KeyGrant, name: str, version, label) -> tuple[loader.VersionSpec, int]:
        """The version answering (inside the caller's tenant only: another tenant's model is a 404), and its spec."""
        routes = await self.router.routes(grant, name)
        number = choose_version(routes, version=version, label=label)
        scope[access.VERSION] = number
        return await self.router.spec(grant, routes, number), number

    async def _parsed(
        self, scope, receive, grant: KeyGrant, declared: int | None, protocol: str, signature: Signature
    ) -> protocols.Parsed:
        """The body read and checked against the signature (a large one in one of the tenant's decoding slots)."""
        async with self.decoder.slot(grant.tenant_id, declared):
            body = await read_body(scope, receive, limit=self.max_body)
            return await self.decoder.decode(body, protocol, signature, _inference_header_length(scope))

    async def _take(self, grant: KeyGrant, rows: int) -> None:
        """The rest of the request's rate-limit tokens, one per instance."""
        await self.limiter.take(grant.tenant_id, per_minute=grant.predictions_per_minute, count=rows, admitted=1)

    @contextlib.asynccontextmanager
    async def _answering(self, grant: KeyGrant, spec: loader.VersionSpec, *, explaining: bool = False):
        """Maps the failures of computing an answer to their status codes, and meters the request however it ends.

        Yields a dict whose ``rows`` the caller sets once the instances are answered (``failed`` stays True until
        then); they count as predictions or, when ``explaining``, as explanations.
        """
        outcome = {"rows": 0, "failed": True}
        try:
            yield outcome
        except InputError as exc:
            raise HTTPError(400, str(exc)) from None
        except CapacityError as exc:
            logger.warning("capacity: %s", exc)  # the budget and what others use are for operators, not tenants
            raise HTTPError(
                503, "Not enough serving memory for this model now; retry.", headers={"Retry-After": "5"}
            ) from None
        except loader.IntegrityError:
            raise HTTPError(
                503, f"Version {spec.version} of {spec.model_name} failed verification and is not served."
            ) from None
        except loader.StorageUnavailable as exc:  # the object store or the disk, not the version: retry shortly
            logger.error("%s", exc)
            raise HTTPError(
                503,
                f"The files of version {spec.version} of {spec.model_name} could not be fetched now; retry.",
                headers={"Retry-After": "5"},
            ) from None
        except explaining_.ExplainerError as exc:
            logger.error("%s", exc)
            raise HTTPError(503, f"Version {spec.version} of {spec.model_name} cannot be explained now.") from None
        except explaining_.ExplainMemoryError as exc:
            logger.warning("%s", exc)
            raise HTTPError(
                503, "Not enough memory to explain this version now; retry.", headers={"Retry-After": "5"}
            ) from None
        except HTTPError as exc:
            outcome["failed"] = exc.status != 429  # a rate-limited request is the tenant's, not the version's, failure
            if exc.status == 429:
                await self.tarpit.hold(grant.tenant_id)
            raise
        finally:
            rows = outcome["rows"]
            self.meter.record(
                tenant_id=grant.tenant_id,
                model_name=spec.model_name,
                version=spec.version,
                predictions=0 if explaining else rows,
                explanations=rows if explaining else 0,
                error=bool(outcome["failed"]),
            )
            counted = self.metrics.explanations if explaining else self.metrics.predictions
            counted[spec.key] += rows

    async def _predict(self, scope, receive, send, protocol: str, name: str, version, label) -> int:
        grant = await self._admitted(scope)
        declared = check_declared_length(scope, limit=self.max_body)
        spec, number = await self._resolved(scope, grant, name, version, label)
        signature = self._signature(spec)
        async with self._answering(grant, spec) as outcome:
            parsed = await self._parsed(scope, receive, grant, declared, protocol, signature)
            await self._take(grant, parsed.rows)
            async with self._batcher(spec.key).caller() as submit, self.cache.lease(spec):
                outputs = await submit(parsed.columns, parsed.rows)
            chunks: list[bytes] = []
            if protocol == "v1":
                answer = protocols.tfserving_response(outputs, parsed)
            else:
                answer, chunks = protocols.v2_response(outputs, parsed, signature, model_name=name, version=number)
            outcome.update(rows=parsed.rows, failed=False)
        if chunks:  # outputs as binary tensor data, after the JSON header
            head = encode(answer)
            await send_bytes(
                send,
                200,
                head + b"".join(chunks),
                "application/octet-stream",
                {"Inference-Header-Content-Length": str(len(head)), "X-Model-Version": str(number)},
            )
            return 200
        return await self._reply(send, 200, answer, {"X-Model-Version": str(number)})

    async def _explain(self, scope, receive, send, name: str, version, label) -> int:
        """``:explain``: the predict path's checks and predictions, then the version's explain signature on the explain
        executor.

        A version without an explanation in its manifest, or one instance of which needs more memory than
        ``SERVING_EXPLAIN_MAX_BYTES`` (its manifest's estimate), is refused (409) and one tenant's explanations beyond
        its slots (429) before the body is read; the instance cap is checked before any TensorFlow work.
        """
        grant = await self._admitted(scope)
        declared = check_declared_length(scope, limit=self.max_body)
        spec, number = await self._resolved(scope, grant, name, version, label)
        signature = self._signature(spec)
        if explaining_.explanation_of(spec.manifest) is None:
            raise explaining_.unavailable(name, number)
        refusal = explaining_.too_large(name, number, spec.manifest, max_bytes=self.explain_max_bytes)
        if refusal is not None:
            raise refusal
        async with self._answering(grant, spec, explaining=True) as outcome:
            with self.explain_slots.slot(grant.tenant_id):
                parsed = await self._parsed(scope, receive, grant, declared, "v1", signature)
                if parsed.rows > self.explain_max_instances:
                    raise InputError(
                        f"At most {self.explain_max_instances} instances per explanation request; "
                        f"this one has {parsed.rows}."
                    )
                await self._take(grant, parsed.rows)
                # The predictions come from the runtime that answers :predict (the compiled one, when the version
                # has it: it agrees with TensorFlow to ~1e-7, not bit for bit), so they are exactly :predict's.
                async with self._batcher(spec.key).caller() as submit, self.cache.lease(spec):
                    outputs = await submit(parsed.columns, parsed.rows)
                arrays = await asyncio.get_running_loop().run_in_executor(
                    self._explain_pool, self.explainers.explain, spec, parsed.columns
                )
            answer = explaining_.explain_response(arrays, outputs, parsed, signature, spec.manifest)
            outcome.update(rows=parsed.rows, failed=False)
        return await self._reply(send, 200, answer, {"X-Model-Version": str(number)})

    def _signature(self, spec: loader.VersionSpec) -> Signature:
        signature = self._signatures.get(spec.key)
        if signature is None:
            try:
                signature = Signature.from_manifest(spec.manifest)
            except ValueError as exc:
                logger.error("%s: unusable signature in its manifest: %s", spec.label, exc)
                raise HTTPError(503, f"Version {spec.version} of {spec.model_name} cannot be served.") from None
            self._signatures[spec.key] = signature
        return signature

    def _batcher(self, key: tuple[str, str, int]) -> Batcher:
        batcher = self._batchers.get(key)
        if batcher is None:
            batcher = Batcher(
                lambda columns: self.cache.model(key).predict(columns),
                max_batch=settings.SERVING_MAX_BATCH_SIZE,
                max_wait=settings.SERVING_BATCH_WAIT_MICROSECONDS / 1e6,
                executor=self._infer,
                concurrent_batches=settings.SERVING_CONCURRENT_BATCHES,
                on_batch=self.metrics.batch_rows.observe,
                inline=lambda rows: self.cache.model(key).runs_inline(rows),
            )
            self._batchers[key] = batcher
        return batcher

    def _prune_disk(self, *, keep: set[tuple[str, str, int]]) -> list:
        """The disk prune after a load: besides the loaded models (``keep``), the explainers' versions are spared
        (those being fetched or loaded are marked ``loader.in_use`` by the explainers themselves)."""
        return loader.prune_disk_cache(keep=set(keep) | set(self.explainers.keys()))

    def _forget(self, key: tuple[str, str, int]) -> None:
        """An unloaded version's batcher and signature go too, unless callers are still with it; its metrics go."""
        self.metrics.forget(key)
        batcher = self._batchers.get(key)
        if batcher is None or batcher.idle:
            self._batchers.pop(key, None)
            self._signatures.pop(key, None)

    # --- Hot swap and metering ----------------------------------------------

    def _routes_changed(self, grant: KeyGrant, routes: ModelRoutes) -> None:
        """Hot swap: load versions the routes newly point at, unload those they stopped pointing at.

        A newly referenced version is loaded in the background at once, so
        the first requests routed to it find it warm (or wait on that one
        load); a dropped one is unloaded when its in-flight requests finish.
        """
        key = (grant.tenant_id, routes.model_name)
        now = routes.referenced()
        before = self._referenced.get(key)
        self._referenced[key] = now
        if before is None:
            return
        for version in before - now:
            self.cache.retire((grant.tenant_id, routes.model_name, version))
        for version in now - before:
            if version in routes.ready_versions():
                asyncio.get_running_loop().create_task(self._preload(grant, routes, version))

    async def _preload(self, grant: KeyGrant, routes: ModelRoutes, version: int) -> None:
        try:
            spec = await self.router.spec(grant, routes, version)
            async with self.cache.lease(spec):
                pass
        except Exception:  # the first request for it will load it, or answer why not
            logger.warning("could not preload %s v%s", routes.model_name, version, exc_info=True)

    async def report(self) -> None:
        """Tell the operators' status page what this process has loaded."""
        loaded = [
            {
                "model": m.spec.label,
                "runtime": m.runtime,
                "memory_bytes": m.memory_bytes,
                "load_seconds": round(m.load_seconds, 3),
            }
            for m in self.cache.loaded()
        ]
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._db,
                lambda: services.report_serving_process(
                    name=self.name,
                    started_at=self.started_at,
                    used_bytes=self.cache.used_bytes,
                    budget_bytes=self.cache.budget_bytes,
                    loaded=loaded,
                ),
            )
        except Exception:
            logger.warning("could not report this serving process", exc_info=True)

    async def flush_usage(self) -> None:
        counts = self.meter.take()
        if not counts:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._db, lambda: services.record_prediction_usage(counts=counts)
            )
        except Exception:
            logger.exception("could not write prediction usage; keeping it for the next flush")
            self.meter.give_back(counts)

    async def _watch_suspensions(self) -> None:
        """A suspension reaches this process within SERVING_SUSPENSION_POLL_MILLISECONDS, whatever is cached."""
        while True:
            await asyncio.sleep(settings.SERVING_SUSPENSION_POLL_MILLISECONDS / 1000)
            try:
                await self.router.refresh_suspended()
            except Exception:  # database away: keep the last known set and try again
                logger.warning("could not refresh suspended tenants", exc_info=True)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(settings.SERVING_METERING_FLUSH_SECONDS)
            await self.flush_usage()
            await self.report()
            self.metrics.write_snapshot(self.cache, self.explainers)  # for the other workers' scrapes (--workers N)


def _require(scope: dict[str, Any], method: str) -> None:
    if scope["method"] != method:
        raise HTTPError(405, f"Use {method} here.", headers={"Allow": method})


def _client(scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


def close_pool_connections(pool: ThreadPoolExecutor, threads: int) -> None:
    """Close the database connection each thread of ``pool`` holds, then stop the pool.

    A connection belongs to the thread that opened it, so each of the pool's threads must close its own: one task
    per thread, held at a barrier until all have started, lands on every thread. Without this a stopped app (a
    test's, or a reload's) would leave its connections open until the process ends.
    """
    barrier = threading.Barrier(threads)

    def close_own() -> None:
        connections.close_all()
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=5)

    futures.wait([pool.submit(close_own) for _ in range(threads)], timeout=10)
    pool.shutdown(wait=False)
