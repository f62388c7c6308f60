"""Who is calling and which version answers: registry reads cached for a few seconds.

Keys, tenants and a model's aliases and traffic split are re-read from the
database at most every ``SERVING_ROUTE_TTL_SECONDS``, so an alias move takes
effect within that, with no restart. What takes rights away does not wait
for the TTL: suspensions, and every revocation, member removal or demotion
(read from the audit log), are polled every
``SERVING_SUSPENSION_POLL_MILLISECONDS`` and drop the cached grants of the
tenant concerned. Published versions never change, so their manifests are
cached until evicted.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from django.conf import settings
from django.db import close_old_connections

from core import naming
from serving import selectors, tokens
from serving.models import ModelVersion
from serving.runtime.http import HTTPError
from serving.runtime.limits import AuthFailures
from serving.runtime.loader import VersionSpec
from serving.selectors import KeyGrant, ModelRoutes
from tenants import selectors as tenant_selectors
from tenants import services as tenant_services

PREDICT_SCOPE = "predict"


class TTLCache:
    """A bounded mapping whose entries expire; the least recently added go first when full."""

    def __init__(self, *, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl, self.max_entries = ttl, max_entries
        self._items: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    def get(self, key: Any) -> tuple[bool, Any]:
        found = self._items.get(key)
        if found is None or found[0] < time.monotonic():
            return False, None
        return True, found[1]

    def put(self, key: Any, value: Any, *, ttl: float | None = None) -> None:
        self._items[key] = (time.monotonic() + (self.ttl if ttl is None else ttl), value)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def drop_where(self, predicate: Callable[[Any], bool]) -> int:
        """Forget every entry whose value matches; returns how many."""
        doomed = [key for key, (_, value) in self._items.items() if predicate(value)]
        for key in doomed:
            del self._items[key]
        return len(doomed)


class Router:
    def __init__(
        self, *, ttl: float, db_executor: Executor, on_routes_changed: Callable[[KeyGrant, ModelRoutes], None]
    ):
        self._db = db_executor
        self._keys = TTLCache(ttl=ttl)
        # Unknown keys apart, so a flood of made-up tokens cannot push real tenants' keys out.
        self._unknown_keys = TTLCache(ttl=ttl, max_entries=2_000)
        self._routes = TTLCache(ttl=ttl)
        self._manifests = TTLCache(ttl=24 * 3600, max_entries=2_000)
        self._inflight: dict[Any, asyncio.Future] = {}
        self._on_routes_changed = on_routes_changed
        self.auth_failures = AuthFailures(per_minute=settings.AUTH_FAILURES_PER_MINUTE)
        self.suspended: set[str] = (
            set()
        )  # refreshed every SERVING_SUSPENSION_POLL_MILLISECONDS, apart from the key cache
        self._credential_changes: dict[str, tuple[int, str]] | None = None  # tenant id -> (recent events, latest)
        self._drops = 0  # grants read before a drop are not cached after it (they may predate the change)

    async def refresh_suspended(self) -> None:
        """Re-read suspended tenants, and drop cached grants of tenants where a key lost rights since the last poll.

        A revoked key (or one revoked by cascade), a removed member's keys and a demoted member's keys are
        then read again on their next request, so they are refused or narrowed within this poll, not the TTL.
        """
        self.suspended, changes = await asyncio.get_running_loop().run_in_executor(
            self._db, _with_connection, _poll, {}
        )
        if self._credential_changes is not None:
            tenants = {tenant for tenant, seen in changes.items() if self._credential_changes.get(tenant) != seen}
            if tenants:
                self._drops += 1
                self._keys.drop_where(lambda grant: grant is not None and grant.tenant_id in tenants)
        self._credential_changes = changes

    async def _read(self, key: Any, function: Callable[..., Any], **kwargs: Any) -> Any:
        """One database read per key at a time: concurrent misses wait for the same answer."""
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().run_in_executor(self._db, _with_connection, function, kwargs)
            self._inflight[key] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(pending)

    async def caller(self, authorization: bytes | None, client: str) -> KeyGrant:
        """The grant of a request's key; an address whose keys keep failing gets 429s instead of 401s."""
        try:
            return await self._grant(authorization)
        except HTTPError as error:
            if error.status == 401:
                self.auth_failures.check(client)
                self.auth_failures.failed(client)
            raise

    async def _grant(self, authorization: bytes | None) -> KeyGrant:
        if not authorization:
            raise HTTPError(401, "Send the tenant API key as 'Authorization: Bearer <key>'.")
        scheme, _, raw = authorization.partition(b" ")
        if scheme.lower() != b"bearer" or not raw.strip():
            raise HTTPError(401, "Send the tenant API key as 'Authorization: Bearer <key>'.")
        try:
            raw_key = raw.strip().decode("ascii")
        except UnicodeDecodeError:
            raise HTTPError(401, "Invalid API key.") from None
        if tokens.is_token(raw_key):  # short-lived and tied to a membership: checked on every request, never cached
            grant = await self._read(("token", raw_key), tokens.grant_for_token, raw=raw_key)
            return self._allowed(grant)
        cache_key = hashlib.sha256(raw_key.encode()).hexdigest()
        found, grant = self._keys.get(cache_key)
        if not found and not self._unknown_keys.get(cache_key)[0]:
            drops = self._drops
            grant = await self._read(("key", cache_key), _grant_for_secret, raw_key=raw_key)
            if grant is None:
                self._unknown_keys.put(cache_key, grant)
            elif drops == self._drops:
                self._keys.put(cache_key, grant)
        return self._allowed(grant)

    def _allowed(self, grant: KeyGrant | None) -> KeyGrant:
        if grant is None:
            raise HTTPError(401, "Invalid API key.")
        if grant.revoked:
            raise HTTPError(401, "This API key has been revoked.")
        if grant.expired:
            raise HTTPError(401, "This API key has expired.")
        if not grant.tenant_active or grant.tenant_id in self.suspended:
            raise HTTPError(403, "This tenant is suspended.")
        if PREDICT_SCOPE not in grant.scopes:
            raise HTTPError(403, "This API key lacks the 'predict' scope.")
        return grant

    async def routes(self, grant: KeyGrant, model_name: str) -> ModelRoutes:
        if not naming.is_model_name(model_name):
            raise HTTPError(404, f"No model named '{model_name[:80]}'.")
        key = (grant.tenant_id, model_name)
        found, routes = self._routes.get(key)
        if not found:
            routes = await self._read(
                ("routes", key), selectors.model_routes, tenant_id=grant.tenant_id, model_name=model_name
            )
            self._routes.put(key, routes)
            if routes is not None:
                self._on_routes_changed(grant, routes)
        if routes is None:
            raise HTTPError(404, f"No model named '{model_name}'.")  # another tenant's model looks the same
        return routes

    async def spec(self, grant: KeyGrant, routes: ModelRoutes, version: int) -> VersionSpec:
        row = routes.versions.get(version)
        if row is None:  # the split named a version deleted since this snapshot was read
            raise HTTPError(404, f"{routes.model_name} has no servable version {version}.")
        found, manifest = self._manifests.get(row.id)
        if not found:
            manifest = await self._read(
                ("manifest", row.id), selectors.version_manifest, tenant_id=grant.tenant_id, version_id=row.id
            )
            if manifest is None:
                raise HTTPError(404, f"{routes.model_name} has no servable version {version}.")
            self._manifests.put(row.id, manifest)
        return VersionSpec(
            tenant_id=grant.tenant_id,
            tenant_slug=grant.tenant_slug,
            model_name=routes.model_name,
            version=version,
            object_prefix=row.object_prefix,
            manifest=manifest,
        )


def choose_version(routes: ModelRoutes, *, version: int | None = None, label: str | None = None) -> int:
    """The version a request reaches: the one named, the label's, else the model's default (``default_weights``)."""
    if label is not None:
        if label not in routes.aliases:
            raise HTTPError(404, f"{routes.model_name} has no label '{label}'.")
        version = routes.aliases[label]
    if version is not None:
        row = routes.versions.get(version)
        if row is None:
            raise HTTPError(404, f"{routes.model_name} has no version {version}.")
        if row.status == ModelVersion.Status.PUBLISHING:
            raise HTTPError(409, f"Version {version} of {routes.model_name} is still being published; retry shortly.")
        if row.status != ModelVersion.Status.READY:
            raise HTTPError(409, f"Version {version} of {routes.model_name} is {row.status} and is not served.")
        return version
    default = routes.default_weights()
    if not default:
        raise HTTPError(404, f"{routes.model_name} has no published version yet.")
    versions, weights = zip(*sorted(default.items()), strict=True)
    return random.choices(versions, weights=weights)[0]  # noqa: S311 - a traffic split, not a secret


def _grant_for_secret(*, raw_key: str) -> KeyGrant | None:
    key = tenant_services.use_api_key(raw_key=raw_key)
    return selectors.key_grant(key=key) if key is not None else None


# How far back each poll looks for credential changes: longer than any transaction that writes one takes to
# commit, so a change committed late (its audit row's time is when it was written) is still seen.
CREDENTIAL_CHANGE_WINDOW_SECONDS = 120


def _poll() -> tuple[set[str], dict[str, tuple[int, str]]]:
    return selectors.suspended_tenant_ids(), tenant_selectors.recent_credential_changes(
        seconds=CREDENTIAL_CHANGE_WINDOW_SECONDS
    )


def _with_connection(function: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    close_old_connections()  # a thread of the pool: drop a connection the database has closed
    return function(**kwargs)
