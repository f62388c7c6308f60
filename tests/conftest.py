"""Shared fixtures: a real S3 server, tenants with keys, API clients and worker processes."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from core import storage
from core.s3server import port_is_open, start_s3_server
from tests.support.factories import TenantWithKey, make_tenant


@pytest.fixture(scope="session", autouse=True)
def s3_server(tmp_path_factory):
    """The configured S3 endpoint; a SeaweedFS started (and stopped) here when nothing answers there."""
    parsed = urlparse(settings.S3_ENDPOINT_URL)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    started = None
    if not port_is_open(host, port):
        if host not in {"127.0.0.1", "localhost"}:
            pytest.fail(f"S3_ENDPOINT_URL={settings.S3_ENDPOINT_URL} does not answer", pytrace=False)
        started = start_s3_server(
            data_dir=tmp_path_factory.mktemp("seaweedfs"),
            access_key=settings.S3_ACCESS_KEY_ID,
            secret_key=settings.S3_SECRET_ACCESS_KEY,
            s3_port=port,
        )
    storage.client.cache_clear()
    storage.ensure_bucket()
    yield settings.S3_ENDPOINT_URL
    if started is not None:
        started.stop()


@pytest.fixture(scope="session", autouse=True)
def clean_embedded_broker():
    """Leftover messages from an earlier run must not reach this run's workers."""
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {})
    folder = options.get("data_folder_in")
    if settings.CELERY_BROKER_URL.startswith("filesystem://") and folder:
        shutil.rmtree(folder, ignore_errors=True)
        Path(folder).mkdir(parents=True, exist_ok=True)
    yield


@pytest.fixture
def tenant_a(db) -> TenantWithKey:
    return make_tenant("Tenant A")


@pytest.fixture
def tenant_b(db) -> TenantWithKey:
    return make_tenant("Tenant B")


def client_for(raw_key: str | None) -> APIClient:
    client = APIClient()
    if raw_key:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


@pytest.fixture
def api_a(tenant_a) -> APIClient:
    return client_for(tenant_a.raw_key)


@pytest.fixture
def api_b(tenant_b) -> APIClient:
    return client_for(tenant_b.raw_key)
