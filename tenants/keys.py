"""API key format, generation and hashing (no database access here).

A key looks like ``mlp_<prefix>_<secret>``: the prefix is stored in clear
to find the row and to show which key is which; only a SHA-256 of the whole
key is stored. Keys carry about 240 random bits, so a plain hash is enough
(no slow KDF needed), and comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass

KEY_PREFIX = "mlp"
_ALPHABET = string.ascii_letters + string.digits
_PREFIX_LEN = 10
_SECRET_LEN = 40
_KEY_RE = re.compile(rf"^{KEY_PREFIX}_([A-Za-z0-9]{{{_PREFIX_LEN}}})_([A-Za-z0-9]{{{_SECRET_LEN}}})$")


@dataclass(frozen=True)
class NewKey:
    prefix: str
    raw: str
    digest: str


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def generate_key() -> NewKey:
    prefix = _random(_PREFIX_LEN)
    raw = f"{KEY_PREFIX}_{prefix}_{_random(_SECRET_LEN)}"
    return NewKey(prefix=prefix, raw=raw, digest=hash_key(raw))


def parse_prefix(raw: str) -> str | None:
    """The lookup prefix of a well-formed key, else None."""
    match = _KEY_RE.match(raw)
    return match.group(1) if match else None


def digest_matches(raw: str, digest: str) -> bool:
    return hmac.compare_digest(hash_key(raw), digest)
