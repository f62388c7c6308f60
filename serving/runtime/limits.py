"""Per-tenant prediction rate limits and metering, kept in the serving process's memory.

The limit is a token bucket per tenant holding one minute of the plan's
``predictions_per_minute``; each instance in a request takes one token.
Each serving process enforces it on its own traffic (run N processes behind
a balancer and a tenant gets up to N times the limit; README says so).
Usage is added up in memory and written to the database every few seconds
by ``serving.services.record_prediction_usage``.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

from serving.runtime.http import HTTPError
from serving.services import UsageKey


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


class RateLimiter:
    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, at)

    def take(self, tenant_id: str, *, per_minute: int, count: int) -> None:
        """Spend ``count`` predictions or raise 429 with the seconds until they would fit."""
        now = time.monotonic()
        tokens, at = self._buckets.get(tenant_id, (float(per_minute), now))
        rate = per_minute / 60.0
        tokens = min(float(per_minute), tokens + (now - at) * rate)
        if count > per_minute:
            raise HTTPError(
                429,
                f"{count} instances in one request exceed this plan's {per_minute} predictions per minute.",
                headers={"Retry-After": "60"},
            )
        if tokens < count:
            self._buckets[tenant_id] = (tokens, now)
            wait = math.ceil((count - tokens) / rate) if rate else 60
            raise HTTPError(
                429,
                f"Rate limit: this plan allows {per_minute} predictions per minute.",
                headers={"Retry-After": str(max(1, wait))},
            )
        self._buckets[tenant_id] = (tokens - count, now)


class Meter:
    """Requests, predictions and errors per tenant, model, version and hour, until the next flush."""

    def __init__(self) -> None:
        self._counts: dict[UsageKey, list[int]] = {}

    def record(self, *, tenant_id: str, model_name: str, version: int, predictions: int, error: bool) -> None:
        hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        counts = self._counts.setdefault(UsageKey(tenant_id, model_name, version, hour), [0, 0, 0])
        counts[0] += 1
        counts[1] += predictions
        counts[2] += int(error)

    def take(self) -> dict[UsageKey, tuple[int, int, int]]:
        """The counts so far, handed over for writing, and a fresh start."""
        taken, self._counts = self._counts, {}
        return {key: tuple(values) for key, values in taken.items()}

    def give_back(self, counts: dict[UsageKey, tuple[int, int, int]]) -> None:
        """A write failed (database away): keep the counts for the next flush."""
        for key, values in counts.items():
            mine = self._counts.setdefault(key, [0, 0, 0])
            for i, value in enumerate(values):
                mine[i] += value
