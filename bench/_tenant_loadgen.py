#!/usr/bin/env python
"""Closed-loop load across many tenants at once, checking that every answer is the caller's own model's.

    python bench/_tenant_loadgen.py --port 8001 --plan plan.json --concurrency 32 --seconds 20

``plan.json`` lists, per tenant, the request path, its API key, the body (a
few visitors) and the probabilities its own model answered when asked alone.
Each connection (one keep-alive socket) cycles over the tenants from its own
offset. A 200 whose probabilities are not the caller's own (within 1e-5) but
another tenant's is counted as ``foreign``; one matching no tenant at all as
``unexplained``. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from _loadgen import ConnectionLost, percentile, read_response

TOLERANCE = 1e-5  # the same input in batches of other sizes may differ in the last float bits


class Tally:
    def __init__(self, tenants: int) -> None:
        self.latencies: list[float] = []
        self.statuses: dict[str, int] = {}
        self.per_tenant_ok = [0] * tenants
        self.foreign = 0
        self.unexplained = 0
        self.sample_error = ""


def same(answer: list[float], reference: list[float]) -> bool:
    return len(answer) == len(reference) and all(
        abs(a - b) <= TOLERANCE for a, b in zip(answer, reference, strict=True)
    )


def owner_of(answer: list[float], expected: list[list[float]]) -> int | None:
    matches = [i for i, reference in enumerate(expected) if same(answer, reference)]
    return matches[0] if len(matches) == 1 else None


async def connection(port: int, plan: list[dict], requests: list[bytes], offset: int, tally: Tally, state: dict):
    expected = [entry["expected"] for entry in plan]
    index, reader, writer = offset, None, None
    while not state["stop"]:
        if writer is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        tenant = index % len(plan)
        index += 1
        started = time.perf_counter()
        try:
            writer.write(requests[tenant])
            status, body = await read_response(reader)
        except (ConnectionLost, ConnectionError) as exc:
            if state["counting"]:
                tally.statuses["connection"] = tally.statuses.get("connection", 0) + 1
                tally.sample_error = tally.sample_error or repr(exc)
            writer.close()
            reader = writer = None
            continue
        elapsed = time.perf_counter() - started
        if not state["counting"]:
            continue
        tally.statuses[str(status)] = tally.statuses.get(str(status), 0) + 1
        if status != 200:
            if status != 429:
                tally.sample_error = tally.sample_error or body[:300].decode("utf-8", "replace")
            continue
        tally.latencies.append(elapsed)
        answer = [p["probability"] for p in json.loads(body)["predictions"]]
        owner = owner_of(answer, expected)
        if same(answer, expected[tenant]):
            tally.per_tenant_ok[tenant] += 1
        elif owner is not None:
            tally.foreign += 1
        else:
            tally.unexplained += 1


async def run(args: argparse.Namespace) -> dict:
    with open(args.plan) as handle:
        plan = json.load(handle)
    requests = []
    for entry in plan:
        body = json.dumps(entry["body"]).encode()
        requests.append(
            (
                f"POST {entry['path']} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {entry['key']}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode("latin-1")
            + body
        )
    tally, state = Tally(len(plan)), {"stop": False, "counting": False}
    step = max(1, len(plan) // args.concurrency)
    tasks = [
        asyncio.create_task(connection(args.port, plan, requests, i * step, tally, state))
        for i in range(args.concurrency)
    ]
    await asyncio.sleep(args.warmup)
    state["counting"] = True
    started = time.perf_counter()
    await asyncio.sleep(args.seconds)
    state["counting"] = False
    measured = time.perf_counter() - started
    state["stop"] = True
    await asyncio.wait(tasks, timeout=30)
    latencies = sorted(tally.latencies)
    answered = sum(tally.statuses.values())
    return {
        "concurrency": args.concurrency,
        "tenants": len(plan),
        "seconds": round(measured, 3),
        "ok": len(latencies),
        "ok_rps": len(latencies) / measured,
        "all_rps": answered / measured,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "statuses": tally.statuses,
        "errors_not_429": sum(n for s, n in tally.statuses.items() if s not in {"200", "429"}),
        "foreign": tally.foreign,
        "unexplained": tally.unexplained,
        "tenants_answered": sum(1 for n in tally.per_tenant_ok if n),
        "sample_error": tally.sample_error,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--plan", required=True)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(run(args))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
