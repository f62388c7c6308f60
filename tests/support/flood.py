"""A hostile tenant's flood of oversized and malformed prediction bodies, and latency measurement over keep-alive.

Run as its own process (``python -m tests.support.flood BASE KEY SECONDS MAX_REQUESTS CONTROL CONNECTIONS``)
so the flood's client work never shares an interpreter lock with the serving process or with the bystander
being measured. Standard library only: it starts in a fraction of a second and needs no Django.
"""

from __future__ import annotations

import gc
import http.client
import json
import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

VALUES = 800_000
# The flood's own client work runs at a lower priority: on the test's machine the attacker's clients share the
# serving process's cores, which a real attacker's machines do not. The server is measured, not the box.
FLOOD_NICENESS = 19


def oversized_v2(input_name: str = "item_ids") -> bytes:
    """A KServe v2 body of about 3.2 MB holding 800,000 values (the instance limit is 1,000)."""
    tensor = {"name": input_name, "shape": [VALUES], "datatype": "BYTES", "data": ["1"] * VALUES}
    return json.dumps({"inputs": [tensor]}, separators=(",", ":")).encode()


def hostile_bodies() -> list[tuple[str, bytes]]:
    """(path, body) pairs: oversized valid JSON, the same truncated, a lying shape, and small garbage."""
    big = oversized_v2()
    lying = big.replace(f'"shape":[{VALUES}]'.encode(), b'"shape":[1]', 1)
    return [
        ("/v2/models/clicks/infer", big),
        ("/v2/models/clicks/infer", big[: len(big) - 10]),  # truncated: parsed all the way, then refused
        ("/v2/models/clicks/infer", lying),
        ("/v1/models/clicks:predict", json.dumps({"instances": ["1"] * VALUES}, separators=(",", ":")).encode()),
        ("/v1/models/clicks:predict", b'{"instances": [' + b"[" * 5000),
        ("/v2/models/clicks/infer", b"\xff\xfe not json at all"),
    ]


class Client:
    """One keep-alive connection; reconnects when the server closes it (as it may after refusing a body)."""

    def __init__(self, base: str, key: str) -> None:
        parts = urlsplit(base)
        self.host, self.port = parts.hostname, parts.port
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.connection: http.client.HTTPConnection | None = None

    def post(
        self, path: str, body: bytes | None, timeout: float = 30, method: str = "POST", retry: bool = True
    ) -> tuple[int, bytes]:
        for attempt in range(2 if retry else 1):
            if self.connection is None:
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            try:
                self.connection.request(method, path, body=body, headers=self.headers)
                response = self.connection.getresponse()
                payload = response.read()
                if response.will_close:
                    self.close()
                return response.status, payload
            except (ConnectionError, http.client.HTTPException, OSError):
                self.close()
                if attempt or not retry:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def flood(base: str, key: str, seconds: float, max_requests: int, control: str) -> Counter:
    """Send hostile bodies round-robin while ``control``.on exists, until ``control``.stop exists, ``seconds`` pass
    or ``max_requests`` are sent; count the answers by status."""
    client, bodies, answers = Client(base, key), hostile_bodies(), Counter()
    deadline = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < deadline and sent < max_requests and not os.path.exists(control + ".stop"):
        if not os.path.exists(control + ".on"):
            client.close()
            time.sleep(0.01)
            continue
        path, body = bodies[sent % len(bodies)]
        try:
            status = str(client.post(path, body, retry=False)[0])
        except OSError:
            # The server answered before reading the body and closed the connection (as it does for a
            # refused body), so the rest of this body could not be sent: a refusal, seen from here.
            status = "reset"
        answers[status] += 1
        sent += 1
    client.close()
    return answers


def latencies(base: str, key: str, path: str, body: bytes | None, count: int) -> tuple[list[float], Counter]:
    """Seconds per request for ``count`` sequential requests on one keep-alive connection (GET without a body).

    The measuring process's own garbage collector is off meanwhile: the test process holds TensorFlow, and a
    full collection there (tens of milliseconds) would be counted as the server's latency.
    """
    client, seconds, statuses = Client(base, key), [], Counter()
    gc.disable()
    try:
        for _ in range(count):
            started = time.perf_counter()
            status, _ = client.post(path, body, method="POST" if body is not None else "GET")
            seconds.append(time.perf_counter() - started)
            statuses[status] += 1
    finally:
        gc.enable()
        client.close()
    return seconds, statuses


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def main(base: str, key: str, seconds: float, max_requests: int, control: str, connections: int) -> Counter:
    """``connections`` concurrent floods (threads) from this process, their answers added up."""
    with ThreadPoolExecutor(connections) as pool:
        runs = [pool.submit(flood, base, key, seconds, max_requests, control) for _ in range(connections)]
        return sum((run.result() for run in runs), Counter())


if __name__ == "__main__":
    # The attacker's own CPU is on other machines in life; here it takes only what the server leaves idle.
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError:
        os.nice(FLOOD_NICENESS)
    base_url, api_key, control_path = sys.argv[1], sys.argv[2], sys.argv[5]
    duration, limit, threads = float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[6])
    print(json.dumps(dict(main(base_url, api_key, duration, limit, control_path, threads))), flush=True)
