"""Leaks (issue 12): serving's /metrics, /readyz's failure text, and a month that answered 500.

Each test goes through a public door: the serving process over real HTTP, the API's /readyz and billing
estimate, the dashboard, and ``manage.py serve_models`` as production starts it.
"""

from __future__ import annotations

import hmac
import subprocess
import sys
import time
import urllib.request

import pytest
from django.test import override_settings

from config.celery import app as celery_app
from core import storage
from core.s3server import port_is_open
from tenants.models import User
from tests.support.serving import call, publish_model, serving_server
from tests.support.workers import ROOT, free_port, stop_process_group, subprocess_env

pytestmark = pytest.mark.django_db

TOKEN = "scrape-secret-0123456789"


def _scrape(base: str, authorization: str | None) -> tuple[int, str]:
    request = urllib.request.Request(base + "/metrics")
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# --- serving's /metrics -----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the serving app reads through its own connections
def test_metrics_need_the_token_compared_in_constant_time(tenant_a, monkeypatch):
    compared: list[tuple[bytes, bytes]] = []
    real_compare = hmac.compare_digest

    def recording_compare(a, b):
        compared.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording_compare)
    with serving_server(SERVING_METRICS_TOKEN=TOKEN) as (base, _):
        assert _scrape(base, None)[0] == 401
        assert _scrape(base, f"Bearer {TOKEN[:-1]}")[0] == 401
        assert _scrape(base, f"Bearer {TOKEN}x")[0] == 401
        assert _scrape(base, TOKEN)[0] == 401
        status, text = _scrape(base, f"Bearer {TOKEN}")
        assert status == 200 and "serving_requests_total" in text
        # Every check went through hmac.compare_digest (constant time), not ==.
        assert (f"Bearer {TOKEN}".encode(), f"Bearer {TOKEN}".encode()) in compared
        assert len(compared) >= 5
        # The health endpoints stay open and say nothing but their state.
        status, body, _ = call(base, "GET", "/v2/health/ready")
        assert status == 200 and body == {"ready": True}
        assert call(base, "GET", "/v2/health/live")[1] == {"live": True}


@pytest.mark.django_db(transaction=True)  # the serving app reads through its own connections
def test_metric_labels_name_tenants_by_id_not_slug(tenant_a):
    publish_model(tenant_a.tenant, name="clicks")
    tenant = tenant_a.tenant
    with serving_server(SERVING_METRICS_TOKEN=TOKEN) as (base, _):
        status, answer, _ = call(base, "POST", "/v1/models/clicks:predict", {"instances": ["1 2 3"]}, tenant_a.raw_key)
        assert status == 200, answer
        status, text = _scrape(base, f"Bearer {TOKEN}")
    assert status == 200
    assert tenant.slug not in text
    labels = f'model="clicks",tenant="{tenant.id}",version="1"'
    assert f"serving_predictions_total{{{labels}}} 1.0" in text
    assert f"serving_model_loads_total{{{labels}}} 1.0" in text
    assert f"serving_model_memory_bytes{{{labels}}}" in text


def _production_env(**extra: str) -> dict[str, str]:
    env = subprocess_env(DJANGO_SETTINGS_MODULE="config.settings.production", DEBUG="0", SECRET_KEY="s" * 50, **extra)
    env.pop("SERVING_METRICS_TOKEN", None)
    env.update(extra)
    return env


def test_production_serving_starts_only_with_a_metrics_token():
    port = free_port()
    command = [sys.executable, "manage.py", "serve_models", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        command, cwd=ROOT, env=_production_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        _, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        stop_process_group(process)
        pytest.fail("serve_models started under production settings without SERVING_METRICS_TOKEN")
    assert process.returncode != 0
    assert b"SERVING_METRICS_TOKEN" in stderr and b"ImproperlyConfigured" in stderr
    assert not port_is_open("127.0.0.1", port)
    # The ASGI entry refuses too (uvicorn started on it directly, not through serve_models).
    direct = subprocess.run(
        [sys.executable, "-c", "import config.serving_asgi"],
        cwd=ROOT,
        env=_production_env(),
        capture_output=True,
        timeout=120,
    )
    assert direct.returncode != 0 and b"SERVING_METRICS_TOKEN" in direct.stderr
    # With a token it starts, and /metrics wants it.
    env = _production_env(SERVING_METRICS_TOKEN=TOKEN, SERVING_CACHE_DIR=str(ROOT / "var" / "test" / "leaks-cache"))
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while not port_is_open("127.0.0.1", port):
            assert process.poll() is None, process.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "serve_models did not open its port"
            time.sleep(0.2)
        base = f"http://127.0.0.1:{port}"
        assert _scrape(base, None)[0] == 401
        assert _scrape(base, f"Bearer {TOKEN}")[0] == 200
    finally:
        stop_process_group(process)


# --- the API's /readyz --------------------------------------------------------------------------------------


@pytest.fixture
def components_down(monkeypatch):
    """S3 and the broker pointed at a closed port on this host."""
    closed = free_port()
    monkeypatch.setitem(celery_app.conf, "broker_url", f"redis://127.0.0.1:{closed}/0")
    monkeypatch.setitem(celery_app.conf, "broker_write_url", f"redis://127.0.0.1:{closed}/0")
    storage.client.cache_clear()
    with override_settings(S3_ENDPOINT_URL=f"http://127.0.0.1:{closed}"):
        yield closed
    storage.client.cache_clear()


def _no_internals(text: str, port: int) -> None:
    for leak in ("127.0.0.1", str(port), "Error", "Exception", "redis://", "http://", "Traceback", "connect"):
        assert leak not in text, f"{leak!r} in {text}"


def test_readyz_tells_anonymous_callers_only_which_component_is_down(client, components_down, caplog):
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"] == {"database": "ok", "broker": "fail", "storage": "fail"}
    assert body["error"]["code"] == "not_ready"
    assert body["error"]["details"] == {"broker": "unreachable", "storage": "unreachable"}
    assert "reasons" not in body
    _no_internals(response.content.decode(), components_down)
    # The details are in the log, for operators.
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert "storage unreachable" in logged and f"127.0.0.1:{components_down}" in logged


def test_readyz_gives_operators_the_details(client, components_down):
    with override_settings(SERVING_METRICS_TOKEN=TOKEN):
        by_token = client.get("/readyz", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").json()
        wrong = client.get("/readyz", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x")
    assert f"127.0.0.1:{components_down}" in by_token["reasons"]["storage"]
    assert "reasons" not in wrong.json()
    _no_internals(wrong.content.decode(), components_down)
    operator = User.objects.create_user(email="ops@platform.test", password="ops-password-123", is_staff=True)
    client.force_login(operator)
    assert f"127.0.0.1:{components_down}" in client.get("/readyz").json()["reasons"]["storage"]
    page = client.get("/admin/status/")
    assert page.status_code == 200 and f"127.0.0.1:{components_down}".encode() in page.content


# --- GET /api/v1/billing/estimate?month= --------------------------------------------------------------------


@pytest.mark.parametrize(
    "month",
    [
        "0000-01",
        "9999-12",
        "1969-12",
        "2026-13",
        "2026-00",
        "",
        "\uff12\uff10\uff12\uff16-01",  # fullwidth digits
        "2026-\u0660\u0661",  # Arabic-Indic digits
        " 2026-01",
        "2026-1",
        "2026-01\n",
    ],
)
def test_a_malformed_or_out_of_range_month_is_a_400_with_a_code(tenant_a, api_a, month):
    from tests.support.dashboard import signed_in

    response = api_a.get("/api/v1/billing/estimate", {"month": month})
    assert response.status_code == 400, (month, response.content[:300])
    assert response.json()["error"]["code"] == "invalid_month"
    # The dashboard's month picker stays lenient: anything it cannot read shows this month.
    assert signed_in(tenant_a.owner).get("/usage/", {"month": month}).status_code == 200


def test_the_range_ends_are_billed_and_year_zero_is_not_a_500(api_a):
    for month in ("1970-01", "9998-12"):
        response = api_a.get("/api/v1/billing/estimate", {"month": month})
        assert response.status_code == 200 and response.json()["month"] == month
    assert api_a.get("/api/v1/billing/estimate?month=0000-01").status_code == 400
