"""The operators' status page: queues, Celery workers and the serving processes' loaded models."""

from __future__ import annotations

import pytest

from serving.models import ServingProcess
from tenants.models import User
from tests.support.serving import call, publish_model, serving_server

pytestmark = pytest.mark.django_db(transaction=True)


def test_status_page_shows_queues_and_serving_processes_with_their_models(client, tenant_a):
    publish_model(tenant_a.tenant, name="clicks")
    with serving_server(SERVING_METERING_FLUSH_SECONDS=1) as (base, app):
        assert call(base, "POST", "/v1/models/clicks:predict", {"instances": ["1 2"]}, tenant_a.raw_key)[0] == 200
        import time

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the process reports every flush (1 s here)
            report = ServingProcess.objects.filter(name=app.name).first()
            if report is not None and report.loaded:
                break
            time.sleep(0.2)
        operator = User.objects.create_superuser(email="ops@platform.test", password="ops-password-123")
        client.force_login(operator)
        page = client.get("/admin/status/")
        assert page.status_code == 200
        text = page.content.decode()
        for queue in ("gpu", "cpu", "default"):
            assert f"<td>{queue}</td>" in text
        assert app.name in text and f"{tenant_a.tenant.slug}/clicks/1" in text
    assert not ServingProcess.objects.filter(name=app.name).exists()  # removed at shutdown


def test_status_page_is_for_staff_only(client, tenant_a):
    assert client.get("/admin/status/").status_code == 302
    client.force_login(tenant_a.owner)
    assert client.get("/admin/status/").status_code == 302
