"""Endpoint secrets at rest: sealed with AES-256-GCM under a key derived from ``SECRET_KEY`` and the endpoint.

A secret must be readable to sign with, unlike an API key (kept as a hash); sealing keeps a database dump from
handing every tenant's signing secret out. Rotating ``SECRET_KEY`` makes stored secrets unreadable: endpoints
then need ``rotate-secret``.
"""

from __future__ import annotations

import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings

_NONCE_BYTES = 12


def _aead(endpoint_id) -> AESGCM:
    derived = hmac.new(settings.SECRET_KEY.encode(), b"webhook-secret\x00" + str(endpoint_id).encode(), "sha256")
    return AESGCM(derived.digest())


def seal(secret: str, *, endpoint_id) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + _aead(endpoint_id).encrypt(nonce, secret.encode(), None)


def unseal(sealed: bytes, *, endpoint_id) -> str:
    sealed = bytes(sealed)
    return _aead(endpoint_id).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], None).decode()


def unseal_or_none(sealed: bytes | None, *, endpoint_id) -> str | None:
    """The secret, or None when it was sealed under another ``SECRET_KEY`` (or is missing)."""
    if not sealed:
        return None
    try:
        return unseal(sealed, endpoint_id=endpoint_id)
    except (InvalidTag, ValueError):
        return None
