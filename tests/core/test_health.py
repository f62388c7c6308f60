"""Liveness and readiness probes."""

import json
import subprocess
import sys

import pytest
from django.test import override_settings

from core import storage
from tests.support.workers import ROOT, subprocess_env

pytestmark = pytest.mark.django_db


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_database_broker_and_storage(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}


def test_readyz_names_unreachable_storage(client):
    storage.client.cache_clear()
    try:
        with override_settings(S3_ENDPOINT_URL="http://127.0.0.1:1"):
            response = client.get("/readyz")
    finally:
        storage.client.cache_clear()
    assert response.status_code == 503
    body = response.json()
    assert body["error"]["code"] == "not_ready"
    assert "storage" in body["error"]["message"]
    assert set(body["error"]["details"]) == {"storage"}


PROBE_REQUESTS = """
import json
import django

django.setup()
from django.test import Client

METRICS_AUTH = "Bearer metrics-tok-123"
answers = {}
for name, method, path, host, headers in [
    ("healthz by IP", "get", "/healthz", "127.0.0.1:8000", {}),
    ("readyz by pod IP", "get", "/readyz", "10.1.2.3:8000", {}),
    ("readyz by pod IP with the token", "get", "/readyz", "10.1.2.3:8000", {"HTTP_AUTHORIZATION": "Bearer tok-123"}),
    ("healthz on our host over http", "get", "/healthz", "localhost", {}),
    ("readyz on our host over http", "get", "/readyz", "localhost:8000", {}),
    ("api on our host over http", "get", "/api/v1/tenant", "localhost", {}),
    ("api on a foreign host", "get", "/api/v1/tenant", "10.1.2.3:8000", {}),
    ("POST healthz on a foreign host", "post", "/healthz", "10.1.2.3:8000", {}),
    ("api on our host behind TLS", "get", "/api/v1/tenant", "localhost", {"HTTP_X_FORWARDED_PROTO": "https"}),
    ("metrics by pod IP with the token", "get", "/metrics", "10.1.2.3:8000", {"HTTP_AUTHORIZATION": METRICS_AUTH}),
    ("metrics by pod IP without it", "get", "/metrics", "10.1.2.3:8000", {}),
]:
    response = getattr(Client(), method)(path, HTTP_HOST=host, **headers)
    body = response.json() if response.get("Content-Type") == "application/json" else None
    answers[name] = [response.status_code, body]
print(json.dumps(answers))
"""


def test_probes_answer_any_host_and_never_redirect_under_production_settings():
    """Compose's own health check (``127.0.0.1:8000``) and a kubelet (a pod IP) get 200, never 400 or 301.

    Under ``config.settings.production`` with ``ALLOWED_HOSTS=localhost`` and the https redirect on, as the
    compose file runs ``web``; everything but the two probes still refuses foreign hosts and redirects http.
    """
    env = subprocess_env(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        ALLOWED_HOSTS="localhost",
        SECURE_SSL_REDIRECT="1",
        SERVING_METRICS_TOKEN="tok-123",
        METRICS_TOKEN="metrics-tok-123",  # production refuses to load the API's middleware without it
    )
    env.pop("DEBUG", None)
    result = subprocess.run(
        [sys.executable, "-c", PROBE_REQUESTS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    assert answers["healthz by IP"] == [200, {"status": "ok"}]
    status, body = answers["readyz by pod IP"]
    assert status == 200 and body["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}
    assert "reasons" not in body  # an anonymous caller learns nothing more on the probe path
    assert "reasons" in answers["readyz by pod IP with the token"][1]
    assert answers["healthz on our host over http"] == [200, {"status": "ok"}]
    assert answers["readyz on our host over http"][0] == 200
    assert answers["api on our host over http"][0] == 301
    assert answers["api on a foreign host"][0] == 400
    assert answers["POST healthz on a foreign host"][0] == 400
    assert answers["api on our host behind TLS"][0] == 401
    # A scraper addresses the pod by IP over plain HTTP: /metrics answers before host checks and redirects.
    assert answers["metrics by pod IP with the token"][0] == 200
    assert answers["metrics by pod IP without it"][0] == 401
