"""Webhooks through a real Celery worker and the configured broker: an alias move commits, the delivery task is
sent by name, the worker's first attempt gets a 500, the retry comes back through the broker with its countdown,
and the receiver gets the signed event once."""

from __future__ import annotations

import time

import pytest

from events.models import DeliveryAttempt, WebhookDelivery
from tests.support.factories import make_model_version
from tests.support.webhooks import start_receiver, stop_receiver
from tests.support.workers import celery_worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.broker]


def test_a_worker_delivers_after_a_retry(api_a, tenant_a, monkeypatch):
    monkeypatch.setenv("WEBHOOK_RETRY_BASE_SECONDS", "1")  # the worker's first retry after about a second
    receiver = start_receiver(script=[500, 200])
    try:
        created = api_a.post(
            "/api/v1/webhooks", {"url": receiver.url, "event_types": ["model.alias_moved"]}, format="json"
        ).json()
        receiver.secret = created["secret"]
        make_model_version(tenant_a.tenant, name="clicks", version=1)
        with celery_worker("webhooks", pool="threads"):  # as deployed: the webhooks queue, a thread pool
            assert (
                api_a.put("/api/v1/models/clicks/aliases/production", {"version": 1}, format="json").status_code == 200
            )
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not WebhookDelivery.objects.filter(status="succeeded").exists():
                time.sleep(0.2)
        delivery = WebhookDelivery.objects.get()
        assert delivery.status == "succeeded" and delivery.attempts == 2
        assert [a.status_code for a in DeliveryAttempt.objects.filter(delivery=delivery)] == [500, 200]
        assert len(receiver.received) == 2 and all(r.signature_valid for r in receiver.received)
        assert receiver.received[0].event["id"] == receiver.received[1].event["id"] == delivery.event_id
        assert receiver.received[1].event["data"] == {
            "model": "clicks",
            "alias": "production",
            "version": 1,
            "previous": None,
            "action": "set",
        }
    finally:
        stop_receiver(receiver)
