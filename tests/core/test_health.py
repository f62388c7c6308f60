"""Liveness and readiness probes."""

import pytest
from django.test import override_settings

from core import storage

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
