"""Faults in serving: the process killed under load and restarted; its disk cache deleted or corrupted under it.

What must hold: clients see errors only for requests that overlapped the
outage; after the restart every answer is right and the cache refills from
storage; a cached file that no longer matches the registry's sha256 is
fetched again, never served. Only the serving processes this test started
are killed, by id.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import pytest

from serving import services as registry
from tests.support.jobs import wait_for
from tests.support.serving import call, publish_model
from tests.support.workers import ROOT, free_port, serving_process

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
BODY = {"instances": ["12 85 3 9"]}


def test_serving_killed_under_load_fails_only_in_flight_requests_and_refills(tenant_a):
    tenant_a.tenant.plan.predictions_per_minute = 10**6
    tenant_a.tenant.plan.save()
    publish_model(tenant_a.tenant, name="clicks")
    port = free_port()
    results: list[tuple[float, float, int]] = []  # (sent, answered, status or 0 for a transport error)
    stop = threading.Event()

    def client(base: str) -> None:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                status = call(base, "POST", "/v1/models/clicks:predict", BODY, tenant_a.raw_key)[0]
            except OSError:
                status = 0
                time.sleep(0.05)
            results.append((sent, time.monotonic(), status))

    with serving_process(port=port) as base:
        reference = call(base, "POST", "/v1/models/clicks:predict", BODY, tenant_a.raw_key)[1]
        threads = [threading.Thread(target=client, args=(base,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(results) > 50, 60, "no load")
        killed_at = time.monotonic()
        os.killpg(serving_process.last.pid, signal.SIGKILL)
        serving_process.last.wait()
    try:
        with serving_process(port=port) as base:
            back_at = time.monotonic()
            wait_for(lambda: any(sent > back_at and status == 200 for sent, _, status in results), 60, "no recovery")
            time.sleep(1.0)
            stop.set()
            for thread in threads:
                thread.join()
            again = call(base, "POST", "/v1/models/clicks:predict", BODY, tenant_a.raw_key)[1]
            metrics = call(base, "GET", "/metrics")[1].decode()
    finally:
        stop.set()
    failed = [(sent, answered) for sent, answered, status in results if status != 200]
    assert failed, "the kill should have cost something"
    assert all(answered >= killed_at and sent <= back_at for sent, answered in failed), "a failure outside the outage"
    assert all(status == 200 for sent, _, status in results if sent > back_at)
    assert again == reference
    assert 'serving_model_loads_total{model="' in metrics  # the new process loaded the model again


def test_a_deleted_or_corrupted_disk_cache_is_fetched_again_never_served(tenant_a):
    first = publish_model(tenant_a.tenant, name="clicks", seed=1)
    second = publish_model(tenant_a.tenant, name="clicks", seed=2)
    cache_dir = ROOT / "var" / "test" / f"model-cache-chaos-{os.getpid()}"
    shutil.rmtree(cache_dir, ignore_errors=True)

    def route(version: int) -> None:
        registry.set_alias(tenant=tenant_a.tenant, model_name="clicks", alias="production", version=version)

    def answer(expect_version: str) -> dict:
        def served():
            status, body, headers = call(base, "POST", "/v1/models/clicks:predict", BODY, tenant_a.raw_key)
            return status == 200 and headers["X-Model-Version"] == expect_version and body

        return wait_for(served, 30, f"v{expect_version} not served")

    route(1)
    with serving_process(SERVING_ROUTE_TTL_SECONDS="0", SERVING_CACHE_DIR=str(cache_dir)) as base:
        v1 = answer("1")
        route(2)
        v2 = answer("2")
        assert v1 != v2
        folder_1 = cache_dir / str(tenant_a.tenant.id) / "clicks" / "1"
        folder_2 = cache_dir / str(tenant_a.tenant.id) / "clicks" / "2"
        wait_for(lambda: folder_1.exists() and folder_2.exists(), 10, "nothing cached")
        (folder_1 / "saved_model.pb").write_bytes(b"corrupted under the running process")
        shutil.rmtree(folder_2)
        time.sleep(1.0)  # v1 was retired when production moved; it is reloaded from disk below
        route(1)
        assert answer("1") == v1  # the corrupted copy failed its sha256, was fetched again, and answers as before
        assert (folder_1 / "saved_model.pb").read_bytes() != b"corrupted under the running process"
        route(2)
        assert answer("2") == v2
    assert (first.version, second.version) == (1, 2)
    shutil.rmtree(cache_dir, ignore_errors=True)
