#!/usr/bin/env python
"""Closed-loop HTTP load generator, run as its own process so its CPU is not the server's or the bench's.

    python bench/_loadgen.py --url http://127.0.0.1:8001/v1/models/ctr:predict \
        --body-file bodies.jsonl --header "Authorization: Bearer ..." --concurrency 32 --seconds 10

``--body-file`` holds one request body per line; each connection rotates
over them (so the model sees the real, varied sequences, one per request).
Every connection is one keep-alive HTTP/1.1 socket driven by asyncio
(uvloop when present) with requests pre-encoded, so the client spends a
few microseconds per request instead of the hundreds ``http.client`` and
threads would cost on a 2-core machine shared with the server. A short
warm-up runs first and is not counted; then only 200 answers are counted
as requests, anything else (other statuses, dropped connections) as
errors. Prints one JSON object: requests/s, p50 and p99 latency in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from urllib.parse import urlsplit


class ConnectionLost(Exception):
    """The server closed the connection or sent something this client does not understand."""


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response: (status, body); Content-Length and chunked bodies are both handled."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise ConnectionLost(str(exc)) from None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    try:
        if "content-length" in headers:
            return status, await reader.readexactly(int(headers["content-length"]))
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunks.append(await reader.readexactly(size + 2))
                if size == 0:
                    return status, b"".join(c[:-2] for c in chunks)
    except asyncio.IncompleteReadError as exc:
        raise ConnectionLost(str(exc)) from None
    raise ConnectionLost("a response with neither Content-Length nor chunked encoding")


class Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.statuses: dict[str, int] = {}
        self.sample_error = ""


async def connection(host: str, port: int, requests: list[bytes], offset: int, stats: Stats, state: dict) -> None:
    """Send requests back to back on one keep-alive socket until the run ends (reconnecting if dropped)."""
    index = offset
    reader = writer = None
    while not state["stop"]:
        if writer is None:
            reader, writer = await asyncio.open_connection(host, port)
        request = requests[index % len(requests)]
        index += 1
        started = time.perf_counter()
        try:
            writer.write(request)
            status, body = await read_response(reader)
        except (ConnectionLost, ConnectionError) as exc:
            if state["counting"]:
                stats.errors += 1
                stats.statuses["connection"] = stats.statuses.get("connection", 0) + 1
                stats.sample_error = stats.sample_error or repr(exc)
            writer.close()
            reader = writer = None
            continue
        elapsed = time.perf_counter() - started
        if not state["counting"]:
            continue
        if status == 200:
            stats.latencies.append(elapsed)
        else:
            stats.errors += 1
            stats.statuses[str(status)] = stats.statuses.get(str(status), 0) + 1
            stats.sample_error = stats.sample_error or body[:300].decode("utf-8", "replace")
    if writer is not None:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


async def run(args: argparse.Namespace) -> dict:
    url = urlsplit(args.url)
    path = url.path + (f"?{url.query}" if url.query else "")
    with open(args.body_file, "rb") as handle:
        bodies = [line.rstrip(b"\n") for line in handle if line.strip()]
    extra = "".join(f"{h}\r\n" for h in args.header)
    requests = [
        (
            f"POST {path} HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n"
        ).encode("latin-1")
        + body
        for body in bodies
    ]
    stats, state = Stats(), {"stop": False, "counting": False}
    step = max(1, len(requests) // args.concurrency)
    tasks = [
        asyncio.create_task(connection(url.hostname, url.port, requests, i * step, stats, state))
        for i in range(args.concurrency)
    ]
    await asyncio.sleep(args.warmup)
    state["counting"] = True
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.sleep(args.seconds)
    state["counting"] = False
    measured = time.perf_counter() - started
    cpu = time.process_time() - cpu
    state["stop"] = True
    await asyncio.wait(tasks, timeout=30)
    latencies = sorted(stats.latencies)
    return {
        "concurrency": args.concurrency,
        "seconds": round(measured, 3),
        "requests": len(latencies),
        "rps": len(latencies) / measured,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "mean_ms": (sum(latencies) / len(latencies) * 1000) if latencies else float("nan"),
        "client_cores": cpu / measured,  # this process's own CPU: on a small machine it competes with the server
        "errors": stats.errors,
        "statuses": stats.statuses,
        "sample_error": stats.sample_error,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--body-file", required=True, help="one JSON request body per line")
    parser.add_argument("--header", action="append", default=[], help='"Name: value", repeatable')
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args()
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    print(json.dumps(runner(run(args))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
