"""Refusing callers that keep failing to authenticate (bad API keys, wrong passwords), per client address.

Failures are counted in Django's cache in fixed windows of a minute, so
with a shared cache (``CACHE_URL=redis://…``) every API process sees the
same count; with the default in-memory cache each process counts its own.
API keys are far too long to guess, so a valid key always passes and only
the failures of a noisy address turn into 429s; passwords can be guessed,
so sign-ins are counted per account and address and refused while over.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

WINDOW_SECONDS = 60


def client_address(request: HttpRequest) -> str:
    """The peer's address (behind a proxy, configure it to set REMOTE_ADDR, e.g. gunicorn's forwarded_allow_ips)."""
    return request.META.get("REMOTE_ADDR") or "unknown"


def _key(scope: str, address: str) -> tuple[str, int]:
    window = int(time.time() // WINDOW_SECONDS)
    return f"auth-failures:{scope}:{address}:{window}", WINDOW_SECONDS - int(time.time() % WINDOW_SECONDS)


def retry_after(*, scope: str, address: str) -> int | None:
    """Seconds until this address may try again, or None when it is not blocked."""
    key, left = _key(scope, address)
    return left if (cache.get(key) or 0) >= settings.AUTH_FAILURES_PER_MINUTE else None


def record_failure(*, scope: str, address: str) -> None:
    key, left = _key(scope, address)
    if not cache.add(key, 1, timeout=left + 1):
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.add(key, 1, timeout=left + 1)
