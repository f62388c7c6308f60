"""API key format, generation, hashing, and the rule for what a key may do (no database access here).

A key looks like ``mlp_<prefix>_<secret>``: the prefix is stored in clear
to find the row and to show which key is which; only a SHA-256 of the whole
key is stored. Keys carry about 240 random bits, so a plain hash is enough
(no slow KDF needed), and comparisons are constant-time.

A key never acts with more rights than whoever made it holds *now*: its
rights are its own role and scopes narrowed by its creator's current
membership (when a person made it) and by its parent key's rights (when a
key made it), worked out on every use by :func:`narrow`. A key whose creator
has left the tenant, or whose parent can no longer act, acts with nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass

from tenants.models import ROLE_RANK, ROLE_SCOPES, Role

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


# A key made by a key made by a key ... at most this deep: each use walks the chain (one query per level).
MAX_KEY_DEPTH = 4

# Why a key acts with nothing; each is refused like a revoked key (401).
REVOKED = "api_key_revoked"
EXPIRED = "api_key_expired"
CREATOR_GONE = "api_key_creator_gone"
PARENT_UNUSABLE = "api_key_parent_unusable"
REFUSAL_MESSAGES = {
    REVOKED: "This API key has been revoked.",
    EXPIRED: "This API key has expired.",
    CREATOR_GONE: "This API key has been revoked: the person who created it is no longer a member of this tenant.",
    PARENT_UNUSABLE: "This API key has been revoked: the key that created it has been revoked or has expired.",
}


@dataclass(frozen=True)
class KeyRights:
    """What a key may do at this moment: a role and scopes, or nothing (``refusal`` says why)."""

    role: str | None
    scopes: frozenset[str]
    refusal: str | None = None

    @property
    def usable(self) -> bool:
        return self.refusal is None

    @property
    def message(self) -> str:
        return REFUSAL_MESSAGES.get(self.refusal or "", "")


def refused(reason: str) -> KeyRights:
    return KeyRights(role=None, scopes=frozenset(), refusal=reason)


class NoCreator:
    """Marks a key no person made (an operator's command, a tenant's first key): no person's rights bound it."""


NO_CREATOR = NoCreator()


def narrow(
    *,
    role: str,
    scopes: list[str] | frozenset[str],
    revoked: bool,
    expired: bool,
    creator_role: str | NoCreator | None,
    parent: KeyRights | None,
) -> KeyRights:
    """One key's rights from its own row, its creator's current role and its parent key's rights.

    ``creator_role`` is the creator's role in the key's tenant now (None when they are no longer an active
    member, ``NO_CREATOR`` when no person made the key); ``parent`` is the parent key's rights (None when no
    key made it). Role = min(own role, creator's role, parent's role); scopes = own scopes, intersected with
    the creator's role's scopes and the parent's scopes. A person can lose rights; a key follows at once.
    """
    if revoked:
        return refused(REVOKED)
    if expired:
        return refused(EXPIRED)
    if parent is not None and not parent.usable:
        return refused(PARENT_UNUSABLE)
    if creator_role is None:
        return refused(CREATOR_GONE)
    roles = [Role(role)]
    allowed = {str(scope) for scope in scopes}
    if not isinstance(creator_role, NoCreator):
        roles.append(Role(creator_role))
        allowed &= {str(scope) for scope in ROLE_SCOPES[Role(creator_role)]}
    if parent is not None:
        roles.append(Role(parent.role))
        allowed &= parent.scopes
    lowest = min(roles, key=lambda r: ROLE_RANK[r])
    return KeyRights(role=lowest.value, scopes=frozenset(allowed))
