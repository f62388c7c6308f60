"""Signing webhook bodies, and the check a receiver runs (standard library only: copy ``verify`` as it is).

Each request carries ``X-MLP-Signature: t=<unix seconds>,v1=<hex>``, where the hex is
HMAC-SHA256(secret, f"{t}.{body}") over the exact bytes of the body. Signing the timestamp with the body lets a
receiver refuse a captured request replayed later: it accepts only timestamps within ``tolerance`` seconds of its
own clock. Right after a secret is rotated the header carries one ``v1=`` per valid secret (new first); a receiver
accepts the request if any of them matches its secret.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-MLP-Signature"
EVENT_ID_HEADER = "X-MLP-Event-Id"
EVENT_TYPE_HEADER = "X-MLP-Event-Type"
DEFAULT_TOLERANCE_SECONDS = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``f"{timestamp}.{body}"`` keyed with ``secret``."""
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def signature_header(secrets: list[str], timestamp: int, body: bytes) -> str:
    return ",".join([f"t={timestamp}", *(f"v1={sign(secret, timestamp, body)}" for secret in secrets)])


def verify(
    secret: str, header: str, body: bytes, *, tolerance: int = DEFAULT_TOLERANCE_SECONDS, now: float | None = None
) -> bool:
    """True when ``header`` (the X-MLP-Signature value) signs ``body`` with ``secret`` within ``tolerance`` seconds.

    Give it the raw body bytes as received, before any JSON parsing. Compared in constant time.
    """
    if not isinstance(header, str) or not isinstance(body, bytes):
        return False
    timestamp, signatures = None, []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif key == "v1" and value.isascii():
            signatures.append(value.encode())
    if timestamp is None or not signatures:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).encode()
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures)
