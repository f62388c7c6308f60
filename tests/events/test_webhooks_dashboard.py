"""The dashboard's webhooks page: add an endpoint (secret shown once), ping it, read the log, redeliver; admins only,
and another tenant's webhook or delivery is a 404 that changes nothing."""

from __future__ import annotations

import pytest
from django.urls import reverse

from events.models import WebhookDelivery, WebhookEndpoint
from tenants.models import Role
from tests.support.dashboard import signed_in
from tests.support.factories import make_member, make_webhook
from tests.support.isolation import tenant_rows
from tests.support.webhooks import deliver_due, start_receiver, stop_receiver

pytestmark = pytest.mark.django_db
URL = "/webhooks/"


def test_an_admin_adds_pings_and_reads_the_log(tenant_a):
    receiver = start_receiver()
    try:
        admin = signed_in(make_member(tenant_a.tenant, role=Role.ADMIN).user)
        created = admin.post(URL, {"action": "create", "url": receiver.url, "event_types": ["job.finished"]})
        assert created.status_code == 201 and created["Cache-Control"] == "no-store"
        page = created.content.decode()
        endpoint = WebhookEndpoint.objects.for_tenant(tenant_a.tenant).get()
        secret = page.split('id="webhook-secret">')[1].split("<")[0]
        assert secret.startswith("whsec_")
        receiver.secret = secret
        assert secret not in admin.get(URL).content.decode()  # once only
        assert admin.post(URL, {"action": "ping", "webhook": str(endpoint.pk)}).status_code == 302
        assert deliver_due(tenant_a.tenant) == ["succeeded"] and receiver.received[0].signature_valid
        log = admin.get(URL, {"webhook": str(endpoint.pk)}).content.decode()
        delivery = WebhookDelivery.objects.get()
        assert delivery.event_id in log and "webhook.ping" in log and "HTTP 200" in log
        assert admin.post(URL, {"action": "redeliver", "delivery": str(delivery.pk)}).status_code == 302
        assert WebhookDelivery.objects.filter(event=delivery.event).count() == 2
        assert admin.post(URL, {"action": "disable", "webhook": str(endpoint.pk)}).status_code == 302
        assert WebhookEndpoint.objects.get().is_active is False
        refused = admin.post(
            URL, {"action": "create", "url": "http://169.254.169.254/", "event_types": ["job.finished"]}
        )
        assert refused.status_code == 400 and WebhookEndpoint.objects.count() == 1
        assert admin.post(URL, {"action": "delete", "webhook": str(endpoint.pk)}).status_code == 302
        assert not WebhookEndpoint.objects.exists()
    finally:
        stop_receiver(receiver)


def test_members_and_viewers_are_refused(tenant_a):
    make_webhook(tenant_a.tenant)
    for role in (Role.MEMBER, Role.VIEWER):
        client = signed_in(make_member(tenant_a.tenant, role=role).user)
        assert client.get(URL).status_code == 403
        assert (
            client.post(
                URL, {"action": "create", "url": "https://example.com/", "event_types": ["job.finished"]}
            ).status_code
            == 403
        )


def test_another_tenants_webhooks_are_404_and_unchanged(tenant_a, tenant_b):
    theirs = make_webhook(tenant_a.tenant)
    before = tenant_rows(tenant_a.tenant)
    b_owner = signed_in(tenant_b.owner)
    assert theirs.url not in b_owner.get(URL, {"webhook": str(theirs.pk)}).content.decode()
    for action in ("ping", "rotate", "disable", "delete"):
        assert b_owner.post(URL, {"action": action, "webhook": str(theirs.pk)}).status_code == 404
    assert b_owner.post(URL, {"action": "ping", "webhook": "not-a-uuid"}).status_code == 404
    assert tenant_rows(tenant_a.tenant) == before
    assert reverse("dashboard:webhooks") == URL
