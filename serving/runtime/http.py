"""The little HTTP the serving process needs on top of ASGI: errors, JSON replies, bounded bodies."""

from __future__ import annotations

import json
from typing import Any


class HTTPError(Exception):
    """Answered as ``{"error": message}`` with this status (the shape both protocols use)."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def encode(body: Any) -> bytes:
    # ASCII escapes: a lone surrogate echoed from a client's field name cannot break the answer.
    return json.dumps(body, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode("ascii")


async def send_json(send, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
    payload = encode(body)
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw_headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


async def send_bytes(send, status: int, payload: bytes, content_type: str, headers: dict[str, str]) -> None:
    raw_headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(payload)).encode())]
    raw_headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


def header(scope: dict[str, Any], name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def check_declared_length(scope: dict[str, Any], *, limit: int) -> int | None:
    """The declared Content-Length (None when there is none), refused over ``limit`` (413) or not a number (400)
    before anything is read."""
    declared = header(scope, b"content-length")
    if declared is None:
        return None
    if not declared.isdigit():
        raise HTTPError(400, "Content-Length is not a number.")
    if int(declared) > limit:
        raise HTTPError(413, f"The body is larger than the {limit} bytes this endpoint accepts.")
    return int(declared)


BODY_READ = "mlplatform.body_read"  # set in the ASGI scope once the whole body has been received


async def read_body(scope: dict[str, Any], receive, *, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (declared or streamed)."""
    check_declared_length(scope, limit=limit)
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HTTPError(400, "The client went away while sending the body.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, f"The body is larger than the {limit} bytes this endpoint accepts.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            scope[BODY_READ] = True
            return b"".join(chunks)


def body_left_unread(scope: dict[str, Any]) -> bool:
    """Whether the client sent (or is sending) a body that was not read, e.g. a request refused before its body.

    Such an answer closes the connection: otherwise the server would go on receiving, only to discard it,
    a body of up to the body limit before the next request on that connection, for every refused request.
    """
    if scope.get(BODY_READ):
        return False
    length = header(scope, b"content-length")
    return header(scope, b"transfer-encoding") is not None or (length is not None and length not in {b"0", b""})


def parse_json(body: bytes) -> Any:
    if not body:
        raise HTTPError(400, "The body is empty; send a JSON object.")
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise HTTPError(400, f"The body is not valid JSON: {str(exc)[:200]}") from None


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")
