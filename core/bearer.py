"""The one check of a bearer token (``Authorization: Bearer <token>``), in constant time.

Used by every scrape and operator endpoint (the API's and the workers' ``/metrics``, serving's, ``/readyz``'s
details), so the answer time never tells how much of a guess was right.
"""

from __future__ import annotations

import hmac


def bearer_matches(presented: str | bytes | None, token: str) -> bool:
    """Whether the ``Authorization`` header value ``presented`` carries ``token``; never for an empty token."""
    if not token:
        return False
    if isinstance(presented, str):
        presented = presented.encode("utf-8", "surrogateescape")
    return hmac.compare_digest(presented or b"", f"Bearer {token}".encode())
