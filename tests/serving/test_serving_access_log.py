"""The serving process's access log: one line per request through logging (JSON when configured), with the route's
template, model and version, status, time, bytes, tenant and request id, and never the caller's key."""

from __future__ import annotations

import io
import json
import logging
import time
from contextlib import contextmanager

import pytest

from core.logs import JsonFormatter
from core.middleware import RequestIdLogFilter
from tests.support.serving import call, publish_model, serving_server

pytestmark = pytest.mark.django_db(transaction=True)  # the serving app reads the registry from its own threads


@contextmanager
def _access_lines():
    """The ``serving.access`` lines written meanwhile, as the JSON formatter writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdLogFilter())
    logger = logging.getLogger("serving.access")
    logger.addHandler(handler)
    lines: list[dict] = []
    try:
        yield lines, stream
    finally:
        logger.removeHandler(handler)
        lines.extend(json.loads(line) for line in stream.getvalue().splitlines())


def test_one_json_line_per_request_with_route_model_tenant_and_request_id(tenant_a):
    publish_model(tenant_a.tenant, name="clicks", compiled=True)
    with serving_server() as (base, _app), _access_lines() as (lines, stream):
        status, _, headers = _call_with_id(base, "/v1/models/clicks:predict", {"instances": ["1 2"]}, tenant_a, "r-1")
        assert status == 200 and headers["X-Request-ID"] == "r-1"
        status, _, headers = _call_with_id(base, "/v1/models/nope:predict", {"instances": ["1"]}, tenant_a, "r-2")
        assert status == 404
        assert call(base, "GET", "/healthz")[0] == 200
        _wait_for_lines(stream, 3)  # each is written just after its answer went out
    assert [line["request_id"] for line in lines[:2]] == ["r-1", "r-2"]
    predicted, missing, health = lines
    assert predicted["logger"] == "serving.access" and predicted["method"] == "POST"
    assert predicted["route"] == "/v1/models/{model}:predict"
    assert (predicted["model"], predicted["version"], predicted["status"]) == ("clicks", 1, 200)
    assert predicted["tenant_id"] == str(tenant_a.tenant.id)
    assert predicted["duration_ms"] > 0 and predicted["bytes_out"] > 0 and predicted["bytes_in"] > 0
    assert (missing["status"], missing["model"], missing["version"]) == (404, "nope", None)
    assert health["route"] == "/healthz" and "tenant_id" not in health and len(health["request_id"]) == 32
    assert tenant_a.raw_key not in stream.getvalue() and "Bearer" not in stream.getvalue()


def test_the_access_log_can_be_turned_off(tenant_a):
    publish_model(tenant_a.tenant, name="clicks", compiled=True)
    with serving_server(SERVING_ACCESS_LOG=False) as (base, _app), _access_lines() as (lines, _):
        status, _, headers = _call_with_id(base, "/v1/models/clicks:predict", {"instances": ["1"]}, tenant_a, "r-3")
        assert status == 200 and "X-Request-ID" not in headers
        time.sleep(0.5)  # time enough for a line to be written, were there one
    assert lines == []


def _wait_for_lines(stream: io.StringIO, count: int) -> None:
    deadline = time.monotonic() + 10
    while stream.getvalue().count("\n") < count:
        assert time.monotonic() < deadline, stream.getvalue()
        time.sleep(0.02)


def _call_with_id(base: str, path: str, body: dict, tenant, request_id: str):
    import urllib.error
    import urllib.request

    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST")
    request.add_header("Authorization", f"Bearer {tenant.raw_key}")
    request.add_header("Content-Type", "application/json")
    request.add_header("X-Request-ID", request_id)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers
