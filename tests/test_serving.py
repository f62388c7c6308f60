"""The serving process over real HTTP: both protocols, version choice, auth, bad input, cache, limits, metering."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from serving.models import ModelVersion, PredictionUsage
from serving import services as registry
from tests.factories import make_key
from tests.serving_support import publish_model, serving_server

pytestmark = pytest.mark.django_db(transaction=True)


def call(base: str, method: str, path: str, body=None, key: str | None = None, raw: bytes | None = None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(base + path, data=data, method=method)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = response.read()
            status, headers = response.status, response.headers
    except urllib.error.HTTPError as exc:
        payload, status, headers = exc.read(), exc.code, exc.headers
    content = json.loads(payload) if headers.get("Content-Type", "").startswith("application/json") else payload
    return status, content, headers


def test_tfserving_rows_and_columns(tenant_a):
    publish_model(tenant_a.tenant, name="clicks")
    with serving_server() as (base, _):
        status, body, headers = call(base, "POST", "/v1/models/clicks:predict",
                                     {"instances": ["1 2 3", "4 5 6 7 8 9 10 11 12"]}, tenant_a.raw_key)
        assert status == 200, body
        assert headers["X-Model-Version"] == "1"
        assert len(body["predictions"]) == 2
        for row in body["predictions"]:
            assert set(row) == {"probability", "label"}
            assert 0.0 <= row["probability"] <= 1.0
            assert row["label"] == ("1" if row["probability"] >= 0.5 else "0")
        status, columns, _ = call(base, "POST", "/v1/models/clicks:predict",
                                  {"inputs": {"item_ids": ["1 2 3", "4 5 6 7 8 9 10 11 12"]}}, tenant_a.raw_key)
        assert status == 200, columns
        assert columns["outputs"]["probability"] == [r["probability"] for r in body["predictions"]]
