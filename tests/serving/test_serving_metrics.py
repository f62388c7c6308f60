"""``/metrics`` through prometheus_client: HELP lines, per-version series pruned on unload, and one view of every
worker when ``serve_models --workers N`` runs several processes on one port."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.serving import call, parse_metrics, publish_model, serving_server
from tests.support.workers import serving_process

pytestmark = pytest.mark.django_db(transaction=True)  # the serving apps read the registry from their own threads


def _scrape(base: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        return parse_metrics(response.read().decode())


def _runtime_series(tenant_a) -> str:
    return f'serving_model_runtime{{model="clicks",runtime="onnxruntime",tenant="{tenant_a.tenant.id}",version="1"}}'


def test_a_versions_series_go_when_it_is_unloaded(tenant_a):
    publish_model(tenant_a.tenant, name="clicks", compiled=True)
    labels = f'model="clicks",tenant="{tenant_a.tenant.id}",version="1"'
    with serving_server() as (base, app):
        assert call(base, "POST", "/v1/models/clicks:predict", {"instances": ["1 2"]}, tenant_a.raw_key)[0] == 200
        loaded = _scrape(base)
        assert loaded[f"serving_model_memory_bytes{{{labels}}}"] > 0
        assert loaded[_runtime_series(tenant_a)] == 1.0
        assert loaded[f"serving_predictions_total{{{labels}}}"] == 1.0
        assert loaded["serving_model_unloads_total"] == 0.0

        app.cache.retire((str(tenant_a.tenant.id), "clicks", 1))  # as a hot swap does once no route points at it

        unloaded = _scrape(base)
    assert not [name for name in unloaded if labels in name], "an unloaded version's series must go"
    assert unloaded["serving_model_unloads_total"] == 1.0


@pytest.mark.slow
def test_two_workers_on_one_port_report_as_one(tenant_a):
    tenant_a.tenant.plan.predictions_per_minute = 10**6
    tenant_a.tenant.plan.save()
    publish_model(tenant_a.tenant, name="clicks", compiled=True)
    labels = f'model="clicks",tenant="{tenant_a.tenant.id}",version="1"'
    with serving_process(workers=2, SERVING_METERING_FLUSH_SECONDS="1") as base:
        # Until both workers hold the version: a worker still loading under a busy machine's load binds its
        # socket late, and the kernel then sends every connection to the other one.
        predictions, scrapes = 0, 0
        deadline = time.monotonic() + 90
        while True:
            for _ in range(40):
                status, answer, _ = call(
                    base, "POST", "/v1/models/clicks:predict", {"instances": ["1 2"]}, tenant_a.raw_key
                )
                assert status == 200, answer
                predictions += 1
            time.sleep(2.5)  # every worker has written its per-version snapshot since
            scrapes += 1
            if _scrape(base).get(_runtime_series(tenant_a)) == 2.0:
                break
            assert time.monotonic() < deadline, "the second worker never answered a prediction"
        for scrape in range(scrapes, scrapes + 6):  # whichever worker answers, it reports both
            values = _scrape(base)
            assert values['serving_requests_total{code="200",protocol="v1"}'] == predictions + scrape
            assert values[f"serving_predictions_total{{{labels}}}"] == predictions
            assert values["serving_tensorflow_loaded"] == 0.0
            # One series, counting the workers that hold the version: both, as each has its own socket on the
            # port (SO_REUSEPORT) and the kernel spread the 40 connections between them.
            assert values[_runtime_series(tenant_a)] == 2.0

        # A worker that dies is replaced, and the port keeps answering meanwhile.
        supervisor = serving_process.last.pid
        first, *_ = _children(supervisor)
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while not (len(_children(supervisor)) == 2 and first not in _children(supervisor)):
            assert time.monotonic() < deadline, "the dead worker was not replaced"
            time.sleep(0.2)
        time.sleep(3)  # the new worker starts (imports, migrations checked, ready)
        for _ in range(10):
            assert call(base, "POST", "/v1/models/clicks:predict", {"instances": ["1"]}, tenant_a.raw_key)[0] == 200


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path("/proc", entry, "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry))
    return found
