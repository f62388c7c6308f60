"""One tenant flooding the serving process must not stall another: shapes, sizes and rate before heavy work.

A hostile tenant sends 3-4 MB bodies of 800,000 values (the instance limit is 1,000), truncated and malformed
bodies, from several processes at once, while a bystander tenant sends small predictions one after another.
The bystander's p99 latency under the flood must stay within twice its unloaded p99, plus 5 ms: at p99s of a
few milliseconds on a shared 2-core machine, scheduler noise alone moves a p99 by a millisecond or two, and the
floor keeps the test about the flood rather than about that noise. /healthz latencies are printed too (25 per
round: too few for a p99 worth asserting). The figures are printed for the closing note.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter

import pytest

from tests.support.flood import Client, latencies, percentile
from tests.support.serving import call, publish_model, serving_server
from tests.support.workers import ROOT, serving_process

pytestmark = pytest.mark.django_db(transaction=True)

ROUNDS = 6
PER_ROUND = 150  # bystander predictions per round and condition: 900 unloaded, 900 under the flood
FLOOD_PROCESSES = 3
# 48 connections: one decoding, 32 waiting (unread) for the tenant's slot, the rest refused with a held 429.
FLOOD_CONNECTIONS = 16
FLOOD_MAX_SECONDS = 60
FLOOD_MAX_REQUESTS = 3000
SMALL = json.dumps({"instances": ["12 85 3 9"]}).encode()


def _generous(tenant) -> None:
    """A plan whose rate limit never binds here: the flood must be contained without it."""
    plan = tenant.plan
    plan.slug, plan.pk = f"wide-{tenant.slug}", None
    plan.predictions_per_minute = 10**7
    plan.save()
    tenant.plan = plan
    tenant.save()


def test_bystander_p99_stays_within_twice_unloaded_while_another_tenant_floods(tenant_a, tenant_b, tmp_path):
    bystander, hostile = tenant_a, tenant_b
    _generous(bystander.tenant)
    _generous(hostile.tenant)
    publish_model(bystander.tenant, name="clicks")
    publish_model(hostile.tenant, name="clicks")
    control = str(tmp_path / "flood")
    flood_limits = [str(FLOOD_MAX_SECONDS), str(FLOOD_MAX_REQUESTS)]
    connections = str(FLOOD_CONNECTIONS)
    flood_on = tmp_path / "flood.on"
    samples: dict[str, list[float]] = {"unloaded": [], "loaded": [], "health unloaded": [], "health loaded": []}
    statuses: Counter = Counter()

    def measure(condition: str) -> None:
        seconds, answered = latencies(base, bystander.raw_key, "/v1/models/clicks:predict", SMALL, PER_ROUND)
        samples[condition] += seconds
        statuses.update(answered)
        samples[f"health {condition}"] += latencies(base, bystander.raw_key, "/healthz", None, PER_ROUND // 4)[0]

    with serving_process() as base:
        latencies(base, bystander.raw_key, "/v1/models/clicks:predict", SMALL, 30)  # load the model, warm up
        assert Client(base, hostile.raw_key).post("/v1/models/clicks:predict", SMALL)[0] == 200
        floods = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.support.flood",
                    base,
                    hostile.raw_key,
                    *flood_limits,
                    control,
                    connections,
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(FLOOD_PROCESSES)
        ]
        answers: Counter = Counter()
        started = time.monotonic()
        try:
            # Unloaded and loaded rounds alternate, so whatever else this machine runs meanwhile weighs on both.
            for _ in range(ROUNDS):
                measure("unloaded")
                flood_on.touch()
                # Measured once the flood is under way: its first half second is 48 connections opening at once
                # and the kernel taking in their first megabytes, the machine's work rather than the server's.
                time.sleep(1.5)
                measure("loaded")
                flood_on.unlink()
                time.sleep(0.8)  # bodies in flight and held refusals are answered
        finally:
            flood_on.unlink(missing_ok=True)
            (tmp_path / "flood.stop").touch()
            for process in floods:
                out, _ = process.communicate(timeout=FLOOD_MAX_SECONDS + 30)
                answers.update(json.loads(out.strip().splitlines()[-1]))
    p99 = {condition: percentile(values, 0.99) for condition, values in samples.items()}
    print(
        f"\nbystander p99 unloaded {p99['unloaded'] * 1000:.2f} ms, under flood {p99['loaded'] * 1000:.2f} ms, "
        f"ratio {p99['loaded'] / p99['unloaded']:.2f} (p50 {percentile(samples['unloaded'], 0.5) * 1000:.2f} -> "
        f"{percentile(samples['loaded'], 0.5) * 1000:.2f} ms, max {max(samples['loaded']) * 1000:.1f} ms); "
        f"{len(samples['loaded'])} requests each in {ROUNDS} alternating rounds, {time.monotonic() - started:.1f} s; "
        f"/healthz p99 {p99['health unloaded'] * 1000:.2f} -> {p99['health loaded'] * 1000:.2f} ms; "
        f"hostile answers {dict(sorted(answers.items()))} from {FLOOD_PROCESSES} processes"
    )
    assert statuses == Counter({200: 2 * ROUNDS * PER_ROUND})
    assert sum(answers.values()) >= FLOOD_PROCESSES * 20, answers  # the flood really ran
    # Refused every time: 400 (decoded and refused), 429 (no decoding slot left), 413, or the connection closed
    # by the server while the client was still sending a body it had refused; never served, never a 500.
    assert set(answers) <= {"400", "413", "429", "503", "reset"}, answers
    assert p99["loaded"] <= 2 * p99["unloaded"] + 0.005


def test_refused_requests_spend_the_rate_limit(tenant_a):
    """Malformed bodies cost a token each: a tenant sending only garbage runs into 429s like anyone else."""
    plan = tenant_a.tenant.plan
    plan.slug, plan.pk = "five", None
    plan.predictions_per_minute = 5
    plan.save()
    tenant_a.tenant.plan = plan
    tenant_a.tenant.save()
    publish_model(tenant_a.tenant, name="clicks")
    with serving_server() as (base, _):
        # More instances than the plan allows in a minute: refused once counted, and its first token is spent.
        status, answer, _ = call(base, "POST", "/v1/models/clicks:predict", {"instances": ["1"] * 6}, tenant_a.raw_key)
        assert status == 429 and "exceed" in answer["error"]
        statuses = [
            call(base, "POST", "/v2/models/clicks/infer", key=tenant_a.raw_key, raw=b"{not json")[0] for _ in range(7)
        ]
        assert statuses[:4] == [400] * 4 and statuses[4:] == [429] * 3
        # With the bucket empty a request is refused before its body is read, after a short hold, and its
        # connection is closed rather than kept reading a body nobody will parse.
        started = time.monotonic()
        status, _, headers = call(base, "POST", "/v1/models/clicks:predict", {"instances": ["1"]}, tenant_a.raw_key)
        assert status == 429 and int(headers["Retry-After"]) >= 1 and headers["Connection"] == "close"
        assert time.monotonic() - started >= 0.4


def test_oversized_bodies_are_refused_from_their_shape_and_health_stays_fast(tenant_a):
    from tests.support.flood import hostile_bodies

    _generous(tenant_a.tenant)
    publish_model(tenant_a.tenant, name="clicks")
    with serving_server() as (base, _):
        client = Client(base, tenant_a.raw_key)
        for path, body in hostile_bodies():
            status, payload = client.post(path, body)
            assert status in {400, 413}, (path, status, payload[:200])
        status, payload = client.post("/v2/models/clicks/infer", hostile_bodies()[0][1])
        assert status == 400 and b"1000 instances" in payload
        assert call(base, "POST", "/v1/models/clicks:predict", {"instances": ["1 2 3"]}, tenant_a.raw_key)[0] == 200
        # Large but lawful bodies (over the 16 KiB decoded on the loop) are decoded in the pool and answered.
        sequence = " ".join(str(i % 50) for i in range(12))
        status, answer, _ = call(
            base, "POST", "/v1/models/clicks:predict", {"instances": [sequence] * 1000}, tenant_a.raw_key
        )
        assert status == 200 and len(answer["predictions"]) == 1000
        tensor = {"name": "item_ids", "shape": [1000, 1], "datatype": "BYTES", "data": [[sequence]] * 1000}
        status, answer, _ = call(base, "POST", "/v2/models/clicks/infer", {"inputs": [tensor]}, tenant_a.raw_key)
        assert status == 200 and answer["outputs"][0]["shape"][0] == 1000
