"""Outbound webhook requests that a hostile tenant cannot point at the platform's own network (SSRF).

A tenant chooses the URL, so the platform's workers would otherwise fetch whatever it names: the cloud metadata
service (169.254.169.254), the database, Redis, S3 or an admin port on loopback. So:

- at registration and again before every attempt the host is resolved and *every* address it resolves to must
  be public (``ipaddress``'s ``is_global``, not multicast); with ``WEBHOOK_ALLOW_PRIVATE_NETWORKS`` loopback and
  private ranges are allowed too (development and tests), link-local, multicast, unspecified and reserved never;
- the connection goes to the address that was checked, not to a second lookup (DNS rebinding), while the
  ``Host`` header and TLS SNI/certificate check keep the URL's host name;
- https only unless ``WEBHOOK_ALLOW_HTTP``; no credentials in the URL; ports 1-65535;
- redirects are never followed (a 3xx is a failed attempt), connect and read have short timeouts, the whole
  attempt has a deadline, and at most ``RESPONSE_BYTES_READ`` of the answer is read.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from core.errors import ServiceError

RESPONSE_BYTES_READ = 4096
USER_AGENT = "mlplatform-webhooks/1"


class UnsafeURL(ServiceError):  # a refusal: 400 webhook_url_refused
    code = "webhook_url_refused"


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str  # the checked IP the connection goes to


@dataclass(frozen=True)
class Answer:
    status_code: int | None
    error: str
    duration_ms: int


def _address_allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv6 forms that carry an IPv4 address (mapped, 6to4, Teredo) are judged by the address inside them too.
        embedded = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
        inner = [address for address in embedded if address is not None]
        if inner:
            return all(_address_allowed(address) for address in inner)
        if ip.is_site_local:  # fec0::/10, deprecated but still routed inside some networks
            return bool(settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS)
    if ip.is_multicast or ip.is_unspecified or ip.is_link_local or ip.is_reserved:
        return False
    if ip.is_global:
        return True
    return bool(settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS) and (ip.is_private or ip.is_loopback or ip in _SHARED)


_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: neither global nor "private" to ipaddress


def parse(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path with query) of an acceptable URL; ``UnsafeURL`` otherwise. No DNS."""
    if not isinstance(url, str) or not url or len(url) > settings.WEBHOOK_MAX_URL_LENGTH:
        raise UnsafeURL(f"The URL must be 1-{settings.WEBHOOK_MAX_URL_LENGTH} characters.")
    if not url.isascii() or any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise UnsafeURL("The URL must be ASCII without spaces or control characters (punycode for names).")
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError:  # e.g. "https://[abc/": an unclosed or invalid IPv6 literal
        raise UnsafeURL("The URL is malformed.") from None
    allowed = {"https", "http"} if settings.WEBHOOK_ALLOW_HTTP else {"https"}
    if parts.scheme not in allowed:
        raise UnsafeURL(f"The URL must use {' or '.join(sorted(allowed))}.")
    if parts.username is not None or parts.password is not None:
        raise UnsafeURL("The URL must not carry credentials; put a token in its path or query instead.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeURL("The URL's port is not a number from 1 to 65535.") from None
    host = (hostname or "").rstrip(".")
    if not host or port < 1:
        raise UnsafeURL("The URL has no host.")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, host, port, path


NOT_PUBLIC = (
    "The URL's host must resolve, within a few seconds, to public addresses only: webhooks may not reach private, "
    "loopback, link-local or reserved addresses."
)


def resolve(url: str) -> Target:
    """Check the URL and every address its host resolves to; the target to connect to. ``UnsafeURL`` if not.

    A name that does not resolve and one that resolves to a private address get the same answer, without the
    address: a tenant must not be able to map the platform's internal names through the refusals.
    """
    scheme, host, port, path = parse(url)
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
        addresses = [str(literal)]
    except ValueError:
        if host.lower() == "localhost" or host.lower().endswith(".localhost"):
            addresses = ["127.0.0.1"]
        else:
            addresses = _lookup(host, port, timeout=settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS)
    if not addresses or not all(_address_allowed(ipaddress.ip_address(a.split("%")[0])) for a in addresses):
        raise UnsafeURL(NOT_PUBLIC)
    return Target(scheme=scheme, host=host.strip("[]"), port=port, path=path, address=addresses[0])


def _lookup(host: str, port: int, *, timeout: float) -> list[str]:
    """The addresses of ``host``, or none when it does not resolve within ``timeout`` (a tenant may run a slow
    resolver for its own domain; the lookup must not hold an API thread or a worker for as long as it likes)."""
    found: list[str] = []

    def run() -> None:
        with contextlib.suppress(OSError, UnicodeError):
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            found.extend(dict.fromkeys(info[4][0] for info in infos))

    worker = threading.Thread(target=run, daemon=True, name="webhook-dns")
    worker.start()
    worker.join(timeout)
    return list(found) if not worker.is_alive() else []


def _connection(target: Target, timeout: float, sockets: list[socket.socket]) -> http.client.HTTPConnection:
    if target.scheme == "https":
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            target.host, target.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(target.host, target.port, timeout=timeout)

    # Connect to the checked address; Host, SNI and the certificate check still use the URL's host name. A
    # duplicate of the raw socket is kept for the watchdog: TLS takes the original over (its object is detached),
    # but a shutdown through the duplicate still cuts a handshake a receiver drags out.
    def create_connection(_address, timeout, source):
        sock = socket.create_connection((target.address, target.port), timeout, source)
        sockets.append(sock.dup())
        return sock

    connection._create_connection = create_connection  # type: ignore[attr-defined]
    return connection


def _abort(sockets: list[socket.socket], cut: threading.Event) -> None:
    """Cut an attempt past its deadline: the blocked connect, handshake or read returns at once (a read as an end
    of stream, which http.client would take for the end of the headers, hence ``cut``)."""
    cut.set()
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def post(target: Target, body: bytes, headers: dict[str, str]) -> Answer:
    """POST ``body`` once; the status code, or the reason there is none. Never raises for network trouble."""
    started = time.monotonic()
    deadline = started + settings.WEBHOOK_TOTAL_TIMEOUT_SECONDS
    sockets: list[socket.socket] = []
    connection = _connection(target, settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS, sockets)

    def took() -> int:
        return int((time.monotonic() - started) * 1000)

    # The read timeout bounds each wait; this bounds the whole attempt (a receiver trickling its headers a byte at a
    # time would otherwise hold the worker for as long as it likes).
    cut = threading.Event()
    watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), _abort, args=(sockets, cut))
    watchdog.daemon = True
    watchdog.start()
    try:
        connection.connect()
        connection.sock.settimeout(settings.WEBHOOK_READ_TIMEOUT_SECONDS)
        connection.request(
            "POST",
            target.path,
            body=body,
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
        )
        response = connection.getresponse()
        if cut.is_set():
            return Answer(status_code=None, error="timed out (the attempt's deadline)", duration_ms=took())
        remaining = RESPONSE_BYTES_READ
        while remaining > 0 and time.monotonic() < deadline:
            chunk = response.read1(remaining) if hasattr(response, "read1") else response.read(remaining)
            if not chunk:
                break
            remaining -= len(chunk)
        return Answer(status_code=response.status, error="", duration_ms=took())
    except (OSError, http.client.HTTPException) as exc:  # TimeoutError and ssl.SSLError are OSErrors
        if cut.is_set() or time.monotonic() >= deadline:
            error = "timed out (the attempt's deadline)"
        elif isinstance(exc, TimeoutError):
            error = "timed out"
        elif isinstance(exc, ssl.SSLError):
            error = f"TLS error: {exc.reason or exc.__class__.__name__}"
        else:
            error = f"connection failed: {exc.__class__.__name__}"
        return Answer(status_code=None, error=error, duration_ms=took())
    finally:
        watchdog.cancel()
        connection.close()
        for sock in sockets:
            sock.close()
