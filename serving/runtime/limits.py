"""Per-tenant prediction rate limits and metering (predictions and explanations).

The limit is a token bucket per tenant holding one minute of the plan's
``predictions_per_minute``; each instance in a request takes one token.
With ``SERVING_RATE_LIMIT_URL`` (Redis) every serving process and host spends
from the same bucket, taken atomically in one Lua script per request, so the
limit is exact however many processes answer; without it each process keeps
its own bucket (N processes: up to N times the limit). If Redis cannot be
reached a process falls back to its own bucket for that request (logged), so
an outage of the limiter is not an outage of predictions.
Usage is added up in memory and written to the database every few seconds
by ``serving.services.record_prediction_usage``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import UTC, datetime

from serving.runtime.http import HTTPError
from serving.services import UsageKey

logger = logging.getLogger(__name__)


class AuthFailures:
    """Failed key checks per client address in one-minute windows; over the limit, the address gets 429s."""

    MAX_ADDRESSES = 100_000  # forget everything rather than grow without bound under a spray of addresses

    def __init__(self, *, per_minute: int) -> None:
        self.per_minute = per_minute
        self._counts: dict[str, tuple[int, int]] = {}  # address -> (minute, failures)

    def check(self, address: str) -> None:
        minute = int(time.time() // 60)
        window, failures = self._counts.get(address, (minute, 0))
        if window == minute and failures >= self.per_minute:
            raise HTTPError(
                429,
                "Too many failed API key attempts from this address.",
                headers={"Retry-After": str(60 - int(time.time() % 60))},
            )

    def failed(self, address: str) -> None:
        minute = int(time.time() // 60)
        window, failures = self._counts.get(address, (minute, 0))
        if len(self._counts) >= self.MAX_ADDRESSES:
            self._counts.clear()
        self._counts[address] = (minute, failures + 1 if window == minute else 1)


def _too_many_per_request(count: int, per_minute: int) -> HTTPError:
    return HTTPError(
        429,
        f"{count} instances in one request exceed this plan's {per_minute} predictions per minute.",
        headers={"Retry-After": "60"},
    )


def _refused(per_minute: int, wait_seconds: float) -> HTTPError:
    return HTTPError(
        429,
        f"Rate limit: this plan allows {per_minute} predictions per minute.",
        headers={"Retry-After": str(max(1, math.ceil(wait_seconds)))},
    )


class RateLimiter:
    """A token bucket per tenant in this process; a request takes one token before its body is read, its other
    instances after.

    The first token is kept whatever the answer, so a tenant sending malformed or refused bodies
    spends its budget like one sending predictions, and meets 429s (answered before the body is read).
    """

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, at)

    async def admit(self, tenant_id: str, *, per_minute: int) -> None:
        """Spend the request's first token, before anything is read or parsed, or raise 429."""
        await self.take(tenant_id, per_minute=per_minute, count=1)

    async def take(self, tenant_id: str, *, per_minute: int, count: int, admitted: int = 0) -> None:
        """Spend ``count`` predictions (``admitted`` of them already taken by ``admit``) or raise 429."""
        self.take_here(tenant_id, per_minute=per_minute, count=count, admitted=admitted)

    def take_here(self, tenant_id: str, *, per_minute: int, count: int, admitted: int = 0) -> None:
        if count > per_minute:
            raise _too_many_per_request(count, per_minute)
        now = time.monotonic()
        tokens, at = self._buckets.get(tenant_id, (float(per_minute), now))
        rate = per_minute / 60.0
        tokens = min(float(per_minute), tokens + (now - at) * rate)
        needed = count - admitted
        if tokens < needed:
            self._buckets[tenant_id] = (tokens, now)
            raise _refused(per_minute, (needed - tokens) / rate if rate else 60)
        self._buckets[tenant_id] = (tokens - needed, now)

    async def close(self) -> None:
        return None


# KEYS[1]: the tenant's bucket; ARGV: predictions per minute, tokens needed. Redis' own clock, so every process
# and host refills the bucket by the same time. Returns {1 or 0 (taken or refused), tokens left}.
_TAKE = """
local per_minute = tonumber(ARGV[1])
local needed = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1]) or per_minute
local at = tonumber(bucket[2]) or now
tokens = math.min(per_minute, tokens + math.max(0, now - at) * per_minute / 60)
local taken = 0
if tokens >= needed then
  tokens = tokens - needed
  taken = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], 120)
return {taken, tostring(tokens)}
"""


class SharedRateLimiter(RateLimiter):
    """The same buckets kept in Redis, shared by every serving process and host (exact across them)."""

    PREFIX = "serving:rate:"

    def __init__(self, url: str) -> None:
        super().__init__()
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._take = self._redis.register_script(_TAKE)
        self._warned_at = 0.0

    async def take(self, tenant_id: str, *, per_minute: int, count: int, admitted: int = 0) -> None:
        if count > per_minute:
            raise _too_many_per_request(count, per_minute)
        needed = count - admitted
        if needed <= 0:
            return
        try:
            taken, tokens = await self._take(keys=[self.PREFIX + tenant_id], args=[per_minute, needed])
        except Exception:  # the limiter's store is away: this process's own bucket, not an outage
            if time.monotonic() - self._warned_at > 60:
                self._warned_at = time.monotonic()
                logger.warning("rate-limit store unreachable; limiting per process meanwhile", exc_info=True)
            self.take_here(tenant_id, per_minute=per_minute, count=count, admitted=admitted)
            return
        if not taken:
            raise _refused(per_minute, (needed - float(tokens)) * 60 / per_minute)

    async def close(self) -> None:
        await self._redis.aclose()


def rate_limiter(url: str) -> RateLimiter:
    """Shared through Redis when ``url`` names one, else per process."""
    return SharedRateLimiter(url) if url else RateLimiter()


class Tarpit:
    """A tenant's refusals (429) are answered after a short pause, up to ``per_tenant`` held at once.

    Answering a refusal at once invites the next request at once: a tenant over its limits would make
    the process refuse thousands of requests a second, each costing the event loop a little. Held, a
    refused connection costs a sleeping coroutine (its unread body stays in the socket) and each of the
    tenant's connections is slowed to a request per pause; past ``per_tenant`` they are answered at once.
    """

    def __init__(self, *, seconds: float, per_tenant: int) -> None:
        self.seconds = seconds
        self.per_tenant = per_tenant
        self._held: dict[str, int] = {}

    async def hold(self, tenant_id: str) -> None:
        held = self._held.get(tenant_id, 0)
        if self.seconds <= 0 or held >= self.per_tenant:
            return
        self._held[tenant_id] = held + 1
        try:
            await asyncio.sleep(self.seconds)
        finally:
            left = self._held[tenant_id] - 1
            if left:
                self._held[tenant_id] = left
            else:
                del self._held[tenant_id]


class Meter:
    """Requests, predictions, errors and explanations per tenant, model, version and hour, until the next flush."""

    FIELDS = 4  # requests, predictions, errors, explanations (the order ``record_prediction_usage`` takes)

    def __init__(self) -> None:
        self._counts: dict[UsageKey, list[int]] = {}

    def record(
        self, *, tenant_id: str, model_name: str, version: int, predictions: int, error: bool, explanations: int = 0
    ) -> None:
        hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        counts = self._counts.setdefault(UsageKey(tenant_id, model_name, version, hour), [0] * self.FIELDS)
        counts[0] += 1
        counts[1] += predictions
        counts[2] += int(error)
        counts[3] += explanations

    def take(self) -> dict[UsageKey, tuple[int, int, int, int]]:
        """The counts so far, handed over for writing, and a fresh start."""
        taken, self._counts = self._counts, {}
        return {key: tuple(values) for key, values in taken.items()}

    def give_back(self, counts: dict[UsageKey, tuple[int, int, int, int]]) -> None:
        """A write failed (database away): keep the counts for the next flush."""
        for key, values in counts.items():
            mine = self._counts.setdefault(key, [0] * self.FIELDS)
            for i, value in enumerate(values):
                mine[i] += value
