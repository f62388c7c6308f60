"""Webhooks end to end: endpoints through the API, events emitted by the services that make them happen, signed
deliveries to a real HTTP receiver on 127.0.0.1, retries with backoff, SSRF refusals and tenant isolation."""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import override_settings
from django.utils import timezone

from events import network, services, signing
from events.models import DeliveryAttempt, QuotaAlert, WebhookDelivery, WebhookEndpoint
from serving import publishing
from tenants.models import Plan
from tests.conftest import client_for
from tests.support.factories import make_job, make_key, make_model_version, put_on_plan
from tests.support.isolation import tenant_rows
from tests.support.webhooks import deliver_due, start_receiver, stop_receiver
from training import services as job_services
from usage import services as usage_services

pytestmark = pytest.mark.django_db
ALL_TYPES = ["job.finished", "model.version_ready", "model.alias_moved", "model.traffic_changed", "quota.nearly_used"]


@pytest.fixture
def receiver():
    started = start_receiver()
    yield started
    stop_receiver(started)


def register(client, receiver, event_types=ALL_TYPES) -> dict:
    response = client.post("/api/v1/webhooks", {"url": receiver.url, "event_types": event_types}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["secret"].startswith("whsec_") and response["Cache-Control"] == "no-store"
    receiver.secret = body["secret"]
    return body


def test_secret_is_shown_once_and_endpoints_are_managed(api_a, receiver):
    created = register(api_a, receiver, ["job.finished"])
    again = api_a.get(f"/api/v1/webhooks/{created['id']}").json()
    assert "secret" not in again and again["event_types"] == ["job.finished"]
    assert all("secret" not in w for w in api_a.get("/api/v1/webhooks").json()["results"])
    changed = api_a.patch(
        f"/api/v1/webhooks/{created['id']}", {"event_types": ["model.alias_moved"], "description": "ops"}, format="json"
    )
    assert changed.status_code == 200 and changed.json()["event_types"] == ["model.alias_moved"]
    assert api_a.delete(f"/api/v1/webhooks/{created['id']}").status_code == 204
    assert not WebhookEndpoint.objects.exists()


def test_a_finished_job_is_delivered_signed(api_a, tenant_a, receiver):
    register(api_a, receiver, ["job.finished"])
    job = make_job(tenant_a.tenant)
    claimed = job_services.claim_job(job_id=job.pk, worker="test:1")
    job_services.finish_job(
        job=claimed,
        status="succeeded",
        compute_seconds=3.0,
        device="cpu",
        metrics={"auc": 0.8, "roc_curve": [[0]]},
        model_version=4,
    )
    assert deliver_due(tenant_a.tenant) == ["succeeded"]
    [request] = receiver.received
    assert request.signature_valid and request.path == "/hooks/mlp?source=test"
    event = request.event
    assert set(event) == {"id", "type", "created_at", "tenant", "data"}
    assert event["type"] == "job.finished" and event["tenant"] == str(tenant_a.tenant.pk)
    assert event["data"] == {
        "job": str(job.pk),
        "status": "succeeded",
        "model_name": "ctr",
        "template": "sequence_ctr",
        "model_version": 4,
        "error_code": None,
        "metrics": {"auc": 0.8},
    }
    assert request.headers[signing.EVENT_ID_HEADER] == event["id"]
    assert request.headers[signing.EVENT_TYPE_HEADER] == "job.finished"
    # A wrong secret, a changed body or an old timestamp fails the receiver's check.
    header = request.headers[signing.SIGNATURE_HEADER]
    assert not signing.verify("whsec_other", header, request.body)
    assert not signing.verify(receiver.secret, header, request.body + b" ")
    assert not signing.verify(receiver.secret, header, request.body, now=time.time() + 301)
    # A repeated finish (a retried write after a lost connection) is the same occurrence: no second event.
    job_services.finish_job(job=claimed, status="succeeded", compute_seconds=3.0, device="cpu", model_version=4)
    assert deliver_due(tenant_a.tenant) == []


def test_a_cancelled_queued_job_and_a_published_version_are_delivered(api_a, tenant_a, receiver):
    register(api_a, receiver)
    job = make_job(tenant_a.tenant)
    job_services.cancel_job(tenant=tenant_a.tenant, job_id=job.pk)
    version = publishing.reserve_version(job=job)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "saved_model.pb").write_bytes(b"not really a model")
        publishing.publish(
            version=version, export_dir=Path(folder), manifest_fields={"runtime": "onnxruntime"}, metrics={"auc": 0.7}
        )
    assert deliver_due(tenant_a.tenant) == ["succeeded", "succeeded"]
    cancelled, ready = receiver.events("job.finished")[0], receiver.events("model.version_ready")[0]
    assert cancelled["data"]["status"] == "cancelled" and cancelled["data"]["job"] == str(job.pk)
    assert ready["data"] == {
        "model": "ctr",
        "version": version.version,
        "job": str(job.pk),
        "runtime": "onnxruntime",
        "metrics": {"auc": 0.7},
    }
    assert all(r.signature_valid for r in receiver.received)


def test_alias_moves_and_traffic_changes_are_delivered(api_a, tenant_a, receiver):
    register(api_a, receiver, ["model.alias_moved", "model.traffic_changed"])
    first = make_model_version(tenant_a.tenant, name="clicks", version=1)
    make_model_version(tenant_a.tenant, name="clicks", version=2)
    assert api_a.put("/api/v1/models/clicks/aliases/production", {"version": 1}, format="json").status_code == 200
    assert api_a.put("/api/v1/models/clicks/aliases/production", {"version": 2}, format="json").status_code == 200
    assert api_a.post("/api/v1/models/clicks/aliases/production/rollback").status_code == 200
    assert api_a.put("/api/v1/models/clicks/traffic", {"weights": {"1": 90, "2": 10}}, format="json").status_code == 200
    assert api_a.delete("/api/v1/models/clicks/aliases/production").status_code == 204
    assert deliver_due(tenant_a.tenant) == ["succeeded"] * 5
    moves = [e["data"] for e in sorted(receiver.events("model.alias_moved"), key=lambda e: e["created_at"])]
    assert [(m["action"], m["version"], m["previous"]) for m in moves] == [
        ("set", 1, None),
        ("set", 2, 1),
        ("rollback", 1, 2),
        ("deleted", None, 1),
    ]
    assert receiver.events("model.traffic_changed")[0]["data"]["weights"] == {"1": 90, "2": 10}
    assert first.model.name == "clicks"


def test_quota_nearly_used_is_sent_once_per_quota_and_month(api_a, tenant_a, receiver):
    register(api_a, receiver, ["quota.nearly_used"])
    plan = Plan.objects.create(slug="tiny", name="Tiny", compute_seconds_per_month=100, storage_bytes=10**12)
    put_on_plan(tenant_a.tenant, plan)
    tenant_a.tenant.refresh_from_db()
    job = make_job(tenant_a.tenant)  # the default budget (at most what is left): all 100 seconds reserved
    assert job.max_runtime_seconds == 100
    job_services.cancel_job(tenant=tenant_a.tenant, job_id=job.pk)
    make_job(tenant_a.tenant)  # crosses again: no second alert this month
    usage_services.aggregate_usage(day=timezone.now().date(), tenant=tenant_a.tenant)
    assert deliver_due(tenant_a.tenant) == ["succeeded"]
    [event] = receiver.events("quota.nearly_used")
    assert event["data"]["quota"] == "compute_seconds_per_month" and event["data"]["limit"] == 100
    assert event["data"]["period"] == timezone.now().strftime("%Y-%m") and event["data"]["used_percent"] >= 80
    # Storage, from the hourly roll-up: a plan whose storage is nearly full.
    plan.storage_bytes = 1
    plan.save()
    tenant_a.tenant.refresh_from_db()
    usage_services.aggregate_usage(day=timezone.now().date(), tenant=tenant_a.tenant)
    usage_services.aggregate_usage(day=timezone.now().date(), tenant=tenant_a.tenant)
    assert deliver_due(tenant_a.tenant) == ["succeeded"]
    assert [e["data"]["quota"] for e in receiver.events("quota.nearly_used")] == [
        "compute_seconds_per_month",
        "storage_bytes",
    ]
    assert QuotaAlert.objects.for_tenant(tenant_a.tenant).count() == 2


def test_failures_are_retried_with_backoff_then_succeed(api_a, tenant_a, receiver):
    receiver.script = [500, 503, 200]
    created = register(api_a, receiver)
    assert api_a.post(f"/api/v1/webhooks/{created['id']}/ping").status_code == 202
    delivery = WebhookDelivery.objects.get()
    waits = []
    for expected in ("pending", "pending", "succeeded"):
        assert services.attempt_delivery(delivery_id=delivery.pk).status == expected
        delivery.refresh_from_db()
        if expected == "pending":
            waits.append((delivery.next_attempt_at - delivery.last_attempt_at).total_seconds())
            # Not due yet: a second message for it does nothing.
            assert services.attempt_delivery(delivery_id=delivery.pk).status == "not_due"
            WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert 8 <= waits[0] <= 12 and 48 <= waits[1] <= 72  # 10 s then 60 s, +-20% jitter
    assert [a.status_code for a in DeliveryAttempt.objects.filter(delivery=delivery)] == [500, 503, 200]
    assert delivery.attempts == 3 and delivery.delivered_at is not None
    # Delivered: never sent again, whatever message arrives.
    assert services.attempt_delivery(delivery_id=delivery.pk).status == "succeeded"
    assert len(receiver.received) == 3
    log = api_a.get(f"/api/v1/webhooks/{created['id']}/deliveries").json()
    assert log["count"] == 1
    row = log["results"][0]
    assert row["event_type"] == "webhook.ping" and row["attempts"] == 3 and row["last_status_code"] == 200
    assert row["status"] == "succeeded" and row["event_id"].startswith("evt_")
    # Redelivery: a new delivery of the same event id.
    again = api_a.post(f"/api/v1/webhook-deliveries/{row['id']}/redeliver")
    assert again.status_code == 202 and again.json()["event_id"] == row["event_id"]
    assert deliver_due(tenant_a.tenant) == ["succeeded"]
    assert receiver.received[-1].event["id"] == row["event_id"]


def test_the_task_retries_with_a_countdown(api_a, tenant_a, receiver, monkeypatch):
    from events import tasks

    receiver.script = [500]
    created = register(api_a, receiver)
    api_a.post(f"/api/v1/webhooks/{created['id']}/ping")
    delivery = WebhookDelivery.objects.get()
    sent = []
    monkeypatch.setattr(tasks.deliver, "apply_async", lambda **options: sent.append(options))
    assert tasks.deliver.apply(kwargs={"delivery_id": str(delivery.pk)}).get() == "pending"
    [retry] = sent
    assert retry["kwargs"]["delivery_id"] == str(delivery.pk) and 8 <= retry["countdown"] <= 12


@override_settings(WEBHOOK_MAX_ATTEMPTS=2)
def test_the_last_attempt_fails_the_delivery_and_410_disables_the_endpoint(api_a, tenant_a, receiver):
    receiver.script = [500]
    created = register(api_a, receiver)
    api_a.post(f"/api/v1/webhooks/{created['id']}/ping")
    delivery = WebhookDelivery.objects.get()
    services.attempt_delivery(delivery_id=delivery.pk)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert services.attempt_delivery(delivery_id=delivery.pk).status == "failed"
    receiver.script = [410]
    api_a.post(f"/api/v1/webhooks/{created['id']}/ping")
    assert deliver_due(tenant_a.tenant) == ["failed"]
    endpoint = api_a.get(f"/api/v1/webhooks/{created['id']}").json()
    assert endpoint["is_active"] is False and "410" in endpoint["disabled_reason"]
    # Disabled endpoints get no events; enabling again forgets the failures.
    make_model_version(tenant_a.tenant, name="m", version=1)
    api_a.put("/api/v1/models/m/aliases/production", {"version": 1}, format="json")
    assert not WebhookDelivery.objects.filter(status="pending").exists()
    enabled = api_a.patch(f"/api/v1/webhooks/{created['id']}", {"is_active": True}, format="json").json()
    assert enabled["is_active"] and enabled["consecutive_failures"] == 0 and not enabled["disabled_reason"]


@override_settings(WEBHOOK_DISABLE_AFTER_SECONDS=60, WEBHOOK_DISABLE_AFTER_FAILURES=2)
def test_an_endpoint_failing_for_long_is_disabled_and_says_so(api_a, tenant_a, receiver):
    receiver.script = [500]
    created = register(api_a, receiver)
    api_a.post(f"/api/v1/webhooks/{created['id']}/ping")
    deliver_due(tenant_a.tenant)
    WebhookEndpoint.objects.update(failing_since=timezone.now() - timedelta(hours=1))
    WebhookDelivery.objects.update(next_attempt_at=timezone.now())
    assert deliver_due(tenant_a.tenant) == ["failed"]
    delivery = api_a.get(f"/api/v1/webhooks/{created['id']}/deliveries").json()["results"][0]
    assert "webhook disabled: every attempt failed since" in delivery["last_error"]
    assert api_a.get(f"/api/v1/webhooks/{created['id']}").json()["is_active"] is False


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/hook",
        "http://192.168.1.10/hook",
        "http://localhost:8000/hook",
        "http://127.0.0.1:6379/",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://2130706433/hook",  # a "host name" that resolves to 127.0.0.1
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
        "http://[2002:7f00:1::1]/hook",  # 6to4 around 127.0.0.1
        "http://[2002:a9fe:a9fe::1]/hook",  # 6to4 around the metadata service
        "http://[fec0::1]/hook",  # IPv6 site-local
    ],
)
@override_settings(WEBHOOK_ALLOW_PRIVATE_NETWORKS=False)
def test_private_addresses_are_refused_at_registration(api_a, tenant_a, url):
    before = tenant_rows(tenant_a.tenant)
    response = api_a.post("/api/v1/webhooks", {"url": url, "event_types": ["job.finished"]}, format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["error"]["code"] == "webhook_url_refused"
    assert "address" not in response.json()["error"]["details"]  # the refusal never echoes what a name resolved to
    assert tenant_rows(tenant_a.tenant) == before


@override_settings(WEBHOOK_ALLOW_PRIVATE_NETWORKS=False)
def test_a_name_that_does_not_resolve_reads_like_a_private_one():
    """Otherwise a tenant could map the platform's internal names (redis, postgres, ...) through the refusals."""
    refusals = []
    for url in ("https://no-such-host.invalid/hook", "https://localhost/hook"):
        with pytest.raises(network.UnsafeURL) as refused:
            network.resolve(url)
        refusals.append((refused.value.message, refused.value.details))
    assert refusals[0] == refusals[1]


def test_a_malformed_url_is_a_400_not_a_500(api_a, tenant_a):
    for url in ("https://[abc/hook", "https://[::1/x", "http://[v1.zz]/"):
        response = api_a.post("/api/v1/webhooks", {"url": url, "event_types": ["job.finished"]}, format="json")
        assert response.status_code == 400, (url, response.content)
        assert response.json()["error"]["code"] == "webhook_url_refused"


def test_verify_refuses_hostile_headers_without_raising():
    body = b"{}"
    good = signing.signature_header(["whsec_x"], int(time.time()), body)
    assert signing.verify("whsec_x", good, body)
    for header in (None, "", "t=²,v1=00", "t=1,v1=é", f"t={int(time.time())},v1=é", "t=9" * 40, "v1=,t=", "=,=,"):
        assert signing.verify("whsec_x", header, body) is False


def test_a_host_name_resolving_to_loopback_is_refused():
    name = socket.gethostname()
    if not socket.gethostbyname(name).startswith("127."):
        name = "localhost"
    with override_settings(WEBHOOK_ALLOW_PRIVATE_NETWORKS=False), pytest.raises(network.UnsafeURL):
        network.resolve(f"http://{name}:8000/hook")


def test_metadata_and_plain_http_rules_hold_even_when_private_networks_are_allowed():
    with pytest.raises(network.UnsafeURL):
        network.resolve("http://169.254.169.254/latest/meta-data/")
    with override_settings(WEBHOOK_ALLOW_HTTP=False), pytest.raises(network.UnsafeURL, match="https"):
        network.resolve("http://127.0.0.1/hook")
    with pytest.raises(network.UnsafeURL):
        network.resolve("http://[2002:a9fe:a9fe::1]/")  # the metadata service inside 6to4
    for bad in ("https://user:pw@example.com/", "ftp://example.com/", "https://exa mple.com/", "https://:99999/"):
        with pytest.raises(network.UnsafeURL):
            network.resolve(bad)


def test_the_address_is_checked_again_at_delivery(api_a, tenant_a, receiver):
    """DNS (or a setting) may change after registration: the check before each attempt refuses, nothing is sent."""
    created = register(api_a, receiver)
    api_a.post(f"/api/v1/webhooks/{created['id']}/ping")
    with override_settings(WEBHOOK_ALLOW_PRIVATE_NETWORKS=False):
        assert deliver_due(tenant_a.tenant) == ["pending"]
    assert receiver.received == []
    assert WebhookDelivery.objects.get().last_error.startswith("refused:")


def test_redirects_are_not_followed(api_a, tenant_a, receiver):
    receiver.script = [302]
    created = register(api_a, receiver)
    api_a.post(f"/api/v1/webhooks/{created['id']}/ping")
    assert deliver_due(tenant_a.tenant) == ["pending"]
    assert "redirects are not followed" in WebhookDelivery.objects.get().last_error and len(receiver.received) == 1


def ping(client, url: str) -> None:
    """Register ``url`` for job.finished and queue a ping to it (the delivery the test then runs)."""
    created = client.post("/api/v1/webhooks", {"url": url, "event_types": ["job.finished"]}, format="json").json()
    assert client.post(f"/api/v1/webhooks/{created['id']}/ping").status_code == 202


def test_a_slow_receiver_times_out(api_a, tenant_a):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the connection, never answers
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        ping(api_a, url)
        started = time.monotonic()
        with override_settings(WEBHOOK_READ_TIMEOUT_SECONDS=0.5):
            assert deliver_due(tenant_a.tenant) == ["pending"]
        assert time.monotonic() - started < 3
        assert WebhookDelivery.objects.get().last_error == "timed out"
    finally:
        silent.close()


def test_a_receiver_trickling_its_answer_is_cut_at_the_deadline(api_a, tenant_a):
    """Each byte arrives within the read timeout, so only the attempt's own deadline stops it."""
    trickler = socket.socket()
    trickler.bind(("127.0.0.1", 0))
    trickler.listen(1)
    stop = threading.Event()

    def serve():
        conn, _ = trickler.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not stop.is_set():
                try:
                    conn.sendall(b"a")
                except OSError:
                    return
                time.sleep(0.1)

    threading.Thread(target=serve, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{trickler.getsockname()[1]}/hook"
        ping(api_a, url)
        started = time.monotonic()
        with override_settings(WEBHOOK_READ_TIMEOUT_SECONDS=0.5, WEBHOOK_TOTAL_TIMEOUT_SECONDS=1):
            assert deliver_due(tenant_a.tenant) == ["pending"]
        assert time.monotonic() - started < 3
        assert WebhookDelivery.objects.get().last_error.startswith("timed out")
    finally:
        stop.set()
        trickler.close()


def test_a_receiver_dragging_out_the_tls_handshake_is_cut_at_the_deadline(api_a, tenant_a):
    """The connect timeout bounds each wait of the handshake; the attempt's deadline bounds all of it."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # takes the TCP connection, never says a word of TLS
    try:
        url = f"https://127.0.0.1:{silent.getsockname()[1]}/hook"
        ping(api_a, url)
        started = time.monotonic()
        with override_settings(WEBHOOK_CONNECT_TIMEOUT_SECONDS=30, WEBHOOK_TOTAL_TIMEOUT_SECONDS=1):
            assert deliver_due(tenant_a.tenant) == ["pending"]
        assert time.monotonic() - started < 5
        assert WebhookDelivery.objects.get().last_error == "timed out (the attempt's deadline)"
    finally:
        silent.close()


def test_an_unreadable_secret_fails_the_attempt_and_rotation_mends_it(api_a, tenant_a, receiver):
    """A secret sealed under another SECRET_KEY: each attempt is recorded as failed (never an endless loop), and a
    rotation drops the unreadable one instead of signing with it for a day."""
    created = register(api_a, receiver)
    WebhookEndpoint.objects.update(secret_sealed=b"\0" * 60)
    api_a.post(f"/api/v1/webhooks/{created['id']}/ping")
    assert deliver_due(tenant_a.tenant) == ["pending"]
    delivery = WebhookDelivery.objects.get()
    assert "rotate" in delivery.last_error and delivery.attempts == 1 and receiver.received == []
    rotated = api_a.post(f"/api/v1/webhooks/{created['id']}/rotate-secret").json()
    receiver.secret = rotated["secret"]
    assert WebhookEndpoint.objects.get().previous_secret_sealed is None
    WebhookDelivery.objects.update(next_attempt_at=timezone.now())
    assert deliver_due(tenant_a.tenant) == ["succeeded"]
    assert signing.verify(
        receiver.secret, receiver.received[0].headers[signing.SIGNATURE_HEADER], receiver.received[0].body
    )


def test_a_delivery_out_of_attempts_is_failed_not_sent(api_a, tenant_a, receiver, settings):
    """An attempt that died after its claim (a killed worker) still counts: the next claim past the last fails."""
    created = register(api_a, receiver)
    api_a.post(f"/api/v1/webhooks/{created['id']}/ping")
    WebhookDelivery.objects.update(attempts=settings.WEBHOOK_MAX_ATTEMPTS)
    assert deliver_due(tenant_a.tenant) == ["failed"]
    assert receiver.received == []


def test_bad_input_is_a_4xx_envelope_and_changes_nothing(api_a, tenant_a, receiver, settings):
    before = tenant_rows(tenant_a.tenant)
    for body in (
        {"url": receiver.url, "event_types": ["job.exploded"]},
        {"url": receiver.url, "event_types": []},
        {"url": receiver.url, "event_types": "job.finished"},
        {"url": "https://example.com/" + "a" * 3000, "event_types": ["job.finished"]},
        {"url": receiver.url, "event_types": ["job.finished"], "secret": "mine"},
        {"event_types": ["job.finished"]},
        [],
    ):
        response = api_a.post("/api/v1/webhooks", body, format="json")
        assert response.status_code == 400, (body, response.status_code)
        assert set(response.json()["error"]) == {"code", "message", "details"}
    assert tenant_rows(tenant_a.tenant) == before
    settings.WEBHOOK_MAX_ENDPOINTS_PER_TENANT = 2
    register(api_a, receiver)
    register(api_a, receiver)
    refused = api_a.post("/api/v1/webhooks", {"url": receiver.url, "event_types": ["job.finished"]}, format="json")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "webhook_limit_reached"


def test_members_cannot_manage_webhooks(tenant_a, receiver):
    member = client_for(make_key(tenant_a.tenant, role="member").raw_key)
    response = member.post("/api/v1/webhooks", {"url": receiver.url, "event_types": ["job.finished"]}, format="json")
    assert response.status_code == 403 and response.json()["error"]["code"] == "role_required"
    assert member.get("/api/v1/webhooks").status_code == 403


def test_tenants_never_see_or_receive_each_others_events(api_a, api_b, tenant_a, tenant_b, receiver):
    other = start_receiver()
    try:
        mine = register(api_a, receiver, ["model.alias_moved"])
        theirs = register(api_b, other, ["model.alias_moved"])
        for path in ("", "/deliveries"):
            assert api_a.get(f"/api/v1/webhooks/{theirs['id']}{path}").status_code == 404
        assert api_a.post(f"/api/v1/webhooks/{theirs['id']}/ping").status_code == 404
        assert api_a.post(f"/api/v1/webhooks/{theirs['id']}/rotate-secret").status_code == 404
        make_model_version(tenant_b.tenant, name="secret-model", version=1)
        api_b.put("/api/v1/models/secret-model/aliases/production", {"version": 1}, format="json")
        assert deliver_due(tenant_a.tenant) == [] and deliver_due(tenant_b.tenant) == ["succeeded"]
        assert receiver.received == [] and len(other.received) == 1 and other.received[0].signature_valid
        b_delivery = WebhookDelivery.objects.for_tenant(tenant_b.tenant).get()
        assert api_a.post(f"/api/v1/webhook-deliveries/{b_delivery.pk}/redeliver").status_code == 404
        assert str(theirs["id"]) not in api_a.get("/api/v1/webhooks").content.decode()
        assert mine["id"] != theirs["id"]
    finally:
        stop_receiver(other)


def test_rotation_signs_with_both_secrets_for_a_day(api_a, tenant_a, receiver):
    created = register(api_a, receiver)
    old = receiver.secret
    rotated = api_a.post(f"/api/v1/webhooks/{created['id']}/rotate-secret")
    assert rotated.status_code == 200 and rotated.json()["secret"] != old
    receiver.secret = rotated.json()["secret"]
    api_a.post(f"/api/v1/webhooks/{created['id']}/ping")
    deliver_due(tenant_a.tenant)
    [request] = receiver.received
    header = request.headers[signing.SIGNATURE_HEADER]
    assert signing.verify(old, header, request.body) and signing.verify(receiver.secret, header, request.body)
    WebhookEndpoint.objects.update(previous_secret_expires_at=timezone.now())
    api_a.post(f"/api/v1/webhooks/{created['id']}/ping")
    deliver_due(tenant_a.tenant)
    header = receiver.received[-1].headers[signing.SIGNATURE_HEADER]
    assert not signing.verify(old, header, receiver.received[-1].body)
    assert signing.verify(receiver.secret, header, receiver.received[-1].body)


def test_emit_sends_the_task_by_name_after_commit(tenant_a, django_capture_on_commit_callbacks, monkeypatch):
    from core import queue

    sent = []
    monkeypatch.setattr(queue, "send", lambda name, **kwargs: sent.append((name, kwargs)))
    services.create_endpoint(tenant=tenant_a.tenant, url="http://127.0.0.1:9/hook", event_types=["job.finished"])
    with django_capture_on_commit_callbacks(execute=True):
        event = services.emit(tenant=tenant_a.tenant, event_type="job.finished", data={"job": "x"})
    delivery = WebhookDelivery.objects.get(event=event)
    assert sent == [("events.tasks.deliver", {"delivery_id": str(delivery.pk)})]
    assert services.emit(tenant=tenant_a.tenant, event_type="model.alias_moved", data={}) is None  # not subscribed


def test_the_sweeper_resends_overdue_deliveries_and_old_events_are_purged(tenant_a, monkeypatch):
    from core import queue

    sent = []
    monkeypatch.setattr(queue, "send", lambda name, **kwargs: sent.append((name, kwargs)))
    endpoint = services.create_endpoint(
        tenant=tenant_a.tenant, url="http://127.0.0.1:9/hook", event_types=["job.finished"]
    ).endpoint
    overdue = services.ping(tenant=tenant_a.tenant, endpoint_id=endpoint.pk)
    services.ping(tenant=tenant_a.tenant, endpoint_id=endpoint.pk)  # just queued: its own message is on its way
    WebhookDelivery.objects.filter(pk=overdue.pk).update(next_attempt_at=timezone.now() - timedelta(minutes=5))
    assert services.send_due_deliveries() == 1
    assert sent == [("events.tasks.deliver", {"delivery_id": str(overdue.pk)})]
    later = timezone.now() + timedelta(days=31)
    assert services.purge_old_events(now=later) == 0  # both still pending
    WebhookDelivery.objects.update(status=WebhookDelivery.Status.FAILED)
    assert services.purge_old_events(now=later) > 0 and not WebhookDelivery.objects.exists()
    assert WebhookEndpoint.objects.filter(pk=endpoint.pk).exists()


def test_operators_read_webhooks_in_the_admin_without_secrets(tenant_a, client):
    from tenants.models import User

    operator = User.objects.create_superuser(email="ops@example.com", password="x")
    client.force_login(operator)
    endpoint = services.create_endpoint(
        tenant=tenant_a.tenant, url="http://127.0.0.1:9/hook", event_types=["job.finished"]
    )
    delivery = services.ping(tenant=tenant_a.tenant, endpoint_id=endpoint.endpoint.pk)
    for path in (
        "/admin/events/webhookendpoint/",
        f"/admin/events/webhookendpoint/{endpoint.endpoint.pk}/change/",
        "/admin/events/webhookdelivery/",
        f"/admin/events/webhookdelivery/{delivery.pk}/change/",
        "/admin/events/webhookevent/",
        "/admin/events/quotaalert/",
    ):
        response = client.get(path)
        assert response.status_code == 200, path
        assert endpoint.secret.encode() not in response.content
    assert client.post(f"/admin/events/webhookdelivery/{delivery.pk}/change/", {}).status_code == 403


def test_pings_and_redeliveries_are_refused_while_a_backlog_waits(api_a, tenant_a, receiver):
    created = register(api_a, receiver)
    for _ in range(services.PENDING_PER_ENDPOINT_FOR_REQUESTS):
        assert api_a.post(f"/api/v1/webhooks/{created['id']}/ping").status_code == 202
    refused = api_a.post(f"/api/v1/webhooks/{created['id']}/ping")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "webhook_backlog"
    assert WebhookDelivery.objects.count() == services.PENDING_PER_ENDPOINT_FOR_REQUESTS
    deliver_due(tenant_a.tenant)
    assert api_a.post(f"/api/v1/webhooks/{created['id']}/ping").status_code == 202
