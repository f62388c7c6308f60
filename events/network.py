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
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
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
    parts = urlsplit(url)
    allowed = {"https", "http"} if settings.WEBHOOK_ALLOW_HTTP else {"https"}
    if parts.scheme not in allowed:
        raise UnsafeURL(f"The URL must use {' or '.join(sorted(allowed))}.")
    if parts.username is not None or parts.password is not None:
        raise UnsafeURL("The URL must not carry credentials; put a token in its path or query instead.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeURL("The URL's port is not a number from 1 to 65535.") from None
    host = (parts.hostname or "").rstrip(".")
    if not host or port < 1:
        raise UnsafeURL("The URL has no host.")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, host, port, path


def resolve(url: str) -> Target:
    """Check the URL and every address its host resolves to; the target to connect to. ``UnsafeURL`` if not."""
    scheme, host, port, path = parse(url)
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
        addresses = [str(literal)]
    except ValueError:
        if host.lower() == "localhost" or host.lower().endswith(".localhost"):
            addresses = ["127.0.0.1"]
        else:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError):
                raise UnsafeURL(f"The host {host!r} does not resolve.") from None
            addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise UnsafeURL(f"The host {host!r} does not resolve.")
    for address in addresses:
        if not _address_allowed(ipaddress.ip_address(address.split("%")[0])):
            raise UnsafeURL(
                "The URL resolves to a private, loopback, link-local or reserved address, which webhooks may not "
                "reach.",
                details={"address": address},
            )
    return Target(scheme=scheme, host=host.strip("[]"), port=port, path=path, address=addresses[0])


def _connection(target: Target, timeout: float) -> http.client.HTTPConnection:
    if target.scheme == "https":
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            target.host, target.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    # Connect to the checked address; Host, SNI and the certificate check still use the URL's host name.
    connection._create_connection = lambda _address, timeout, source: socket.create_connection(  # type: ignore[attr-defined]
        (target.address, target.port), timeout, source
    )
    return connection


def _abort(connection: http.client.HTTPConnection, cut: threading.Event) -> None:
    """Cut an attempt past its deadline: the blocked read returns at once (as an end of stream, which http.client
    would take for the end of the headers, hence ``cut``)."""
    cut.set()
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def post(target: Target, body: bytes, headers: dict[str, str]) -> Answer:
    """POST ``body`` once; the status code, or the reason there is none. Never raises for network trouble."""
    started = time.monotonic()
    deadline = started + settings.WEBHOOK_TOTAL_TIMEOUT_SECONDS
    connection = _connection(target, settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS)

    def took() -> int:
        return int((time.monotonic() - started) * 1000)

    # The read timeout bounds each wait; this bounds the whole attempt (a receiver trickling its headers a byte at a
    # time would otherwise hold the worker for as long as it likes).
    watchdog, cut = None, threading.Event()
    try:
        connection.connect()
        watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), _abort, args=(connection, cut))
        watchdog.daemon = True
        watchdog.start()
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
    except TimeoutError:
        return Answer(status_code=None, error="timed out", duration_ms=took())
    except ssl.SSLError as exc:
        return Answer(status_code=None, error=f"TLS error: {exc.reason or exc.__class__.__name__}", duration_ms=took())
    except (OSError, http.client.HTTPException) as exc:
        if time.monotonic() >= deadline:
            return Answer(status_code=None, error="timed out (the attempt's deadline)", duration_ms=took())
        return Answer(status_code=None, error=f"connection failed: {exc.__class__.__name__}", duration_ms=took())
    finally:
        if watchdog is not None:
            watchdog.cancel()
        connection.close()
