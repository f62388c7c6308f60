"""The audit log: every change made through a service writes exactly one row naming its actor and request."""

from __future__ import annotations

import pytest
from django.urls import resolve

from datasets import services as dataset_services
from events.models import WebhookDelivery
from serving import services as registry
from tenants.models import AuditEvent, Membership, Role, User
from tests.conftest import client_for
from tests.support.datasets import PART, big_csv, put_parts, start, upload
from tests.support.factories import CTR_CSV, make_key, make_member, make_model_version
from tests.support.jobs import submit
from tests.support.routes import api_routes

pytestmark = pytest.mark.django_db


def new_events(tenant, before: set) -> list[AuditEvent]:
    return [e for e in AuditEvent.objects.for_tenant(tenant).order_by("created_at") if e.pk not in before]


def one_event(tenant, before: set, response, action: str, actor: str) -> AuditEvent:
    events = new_events(tenant, before)
    assert [e.action for e in events] == [action], (action, [e.action for e in events])
    event = events[0]
    assert event.actor_label == actor
    assert event.request_id == response["X-Request-ID"]
    return event


def ids(tenant) -> set:
    return set(AuditEvent.objects.for_tenant(tenant).values_list("pk", flat=True))


def write_routes() -> set[tuple[str, str]]:
    """Every (route name, method) of the API that may change something, read from the URL configuration."""
    return {(route.name, method) for route in api_routes() for method in route.methods if method != "get"}


def route_of(response) -> tuple[str, str]:
    request = response.wsgi_request
    return resolve(request.path_info).url_name, request.method.lower()


def test_every_changing_endpoint_writes_one_audit_row(tenant_a, api_a):
    """Walks every write route of the URL configuration: a route added without a step here fails the test."""
    tenant = tenant_a.tenant
    actor = f"api_key:{tenant_a.api_key.prefix}"
    exercised: dict[tuple[str, str], str | None] = {}

    def check(response, action, status=(200, 201, 202, 204)):
        assert response.status_code in status, response.content[:300]
        exercised[route_of(response)] = action
        event = one_event(tenant, before, response, action, actor)
        before.add(event.pk)
        return event

    def changes_nothing(response):
        """A POST that only hands something out (fresh part URLs): no row changes, so no audit row."""
        assert response.status_code == 200, response.content[:300]
        exercised[route_of(response)] = None
        assert new_events(tenant, before) == []

    before = ids(tenant)
    created = api_a.post("/api/v1/api-keys", {"name": "ci", "scopes": ["read"], "role": "viewer"}, format="json")
    event = check(created, "api_key.create")
    assert created.json()["key"] not in str(event.details)  # never the secret
    check(api_a.delete(f"/api/v1/api-keys/{created.json()['id']}"), "api_key.revoke")

    member = api_a.post("/api/v1/members", {"email": "new@example.com", "role": "member"}, format="json")
    check(member, "member.add")
    check(api_a.patch(f"/api/v1/members/{member.json()['id']}", {"role": "viewer"}, format="json"), "member.role")
    check(api_a.delete(f"/api/v1/members/{member.json()['id']}"), "member.remove")

    dataset = upload(api_a, CTR_CSV, name="clicks", label_column="clicked")
    check(dataset, "dataset.create")
    dataset_services.validate_dataset(dataset_id=dataset.json()["id"])
    job = submit(api_a, dataset.json()["id"])
    check(job, "job.create")
    check(api_a.post(f"/api/v1/jobs/{job.json()['id']}/cancel"), "job.cancel")
    privacy_url = f"/api/v1/datasets/{dataset.json()['id']}/privacy"
    check(api_a.put(privacy_url, {"epsilon": 5.0, "delta": 1e-5}, format="json"), "dataset.privacy_budget_set")
    check(api_a.put(privacy_url, {"epsilon": None, "delta": None}, format="json"), "dataset.privacy_budget_cleared")
    check(api_a.delete(f"/api/v1/datasets/{dataset.json()['id']}"), "dataset.delete")

    content = big_csv(PART + 10)
    pending = start(api_a, content)
    check(pending, "dataset.upload_start")
    changes_nothing(api_a.post(f"/api/v1/datasets/uploads/{pending.json()['id']}/part-urls"))
    parts = put_parts(pending.json(), content)
    done = api_a.post(f"/api/v1/datasets/uploads/{pending.json()['id']}/complete", {"parts": parts}, format="json")
    check(done, "dataset.upload_complete")
    abandoned = start(api_a, content)
    check(abandoned, "dataset.upload_start")
    check(api_a.delete(f"/api/v1/datasets/uploads/{abandoned.json()['id']}"), "dataset.upload_abort")

    make_model_version(tenant, name="clicks", version=1)
    make_model_version(tenant, name="clicks", version=2)
    check(api_a.put("/api/v1/models/clicks/aliases/production", {"version": 1}, format="json"), "model.alias_set")
    check(api_a.put("/api/v1/models/clicks/aliases/production", {"version": 2}, format="json"), "model.alias_set")
    rolled_back = check(api_a.post("/api/v1/models/clicks/aliases/production/rollback"), "model.alias_set")
    assert rolled_back.details["rollback"] is True and rolled_back.details["version"] == 1
    check(api_a.delete("/api/v1/models/clicks/aliases/production"), "model.alias_deleted")
    check(api_a.put("/api/v1/models/clicks/traffic", {"weights": {"1": 100}}, format="json"), "model.traffic_set")
    check(api_a.post("/api/v1/models/clicks/versions/2/archive"), "model.version_archived")
    check(api_a.delete("/api/v1/models/clicks/versions/2"), "model.version_deleted")

    hook = api_a.post(
        "/api/v1/webhooks", {"url": "http://127.0.0.1:9/hook", "event_types": ["job.finished"]}, format="json"
    )
    event = check(hook, "webhook.create")
    assert hook.json()["secret"] not in str(event.details)  # never the secret
    hook_url = f"/api/v1/webhooks/{hook.json()['id']}"
    check(api_a.patch(hook_url, {"description": "ops"}, format="json"), "webhook.update")
    check(api_a.post(f"{hook_url}/rotate-secret"), "webhook.rotate_secret")
    ping = api_a.post(f"{hook_url}/ping")
    check(ping, "webhook.ping")
    WebhookDelivery.objects.filter(pk=ping.json()["id"]).update(status=WebhookDelivery.Status.FAILED)
    check(api_a.post(f"/api/v1/webhook-deliveries/{ping.json()['id']}/redeliver"), "webhook.redeliver")
    check(api_a.delete(hook_url), "webhook.delete")

    missing = write_routes() - set(exercised)
    assert not missing, f"write routes this scenario never calls (add a step for each): {sorted(missing)}"


def test_refused_changes_write_nothing(tenant_a, api_a, api_b):
    before = ids(tenant_a.tenant)
    member = make_member(tenant_a.tenant)
    before = ids(tenant_a.tenant)
    assert api_b.delete(f"/api/v1/members/{member.pk}").status_code == 404
    assert api_a.post("/api/v1/members", {"email": "x", "role": "member"}, format="json").status_code == 400
    assert new_events(tenant_a.tenant, before) == []


def test_operator_actions_are_audited_as_the_operator(tenant_a, client):
    operator = User.objects.create_superuser(email="ops@platform.test", password="ops-password-123")
    client.force_login(operator)
    response = client.post(
        "/admin/tenants/tenant/", {"action": "suspend", "_selected_action": [str(tenant_a.tenant.pk)]}
    )
    assert response.status_code == 302
    event = AuditEvent.objects.for_tenant(tenant_a.tenant).get(action="tenant.status")
    assert event.actor_kind == "operator" and event.actor_label == "operator:ops@platform.test"
    assert event.details == {"status": "suspended", "previous": "active"}


def test_audit_log_is_for_owners_and_admins_and_cannot_be_changed(tenant_a, api_a):
    registry_event_count = AuditEvent.objects.for_tenant(tenant_a.tenant).count()
    assert registry_event_count >= 2  # tenant.create and the first key's api_key.create
    listed = api_a.get("/api/v1/audit").json()
    assert listed["count"] == registry_event_count
    assert {e["action"] for e in api_a.get("/api/v1/audit?action=tenant.create").json()["results"]} == {"tenant.create"}
    event_id = listed["results"][0]["id"]
    assert api_a.delete(f"/api/v1/audit/{event_id}").status_code == 405
    assert api_a.put(f"/api/v1/audit/{event_id}", {"action": "x"}, format="json").status_code == 405
    member_key = make_key(tenant_a.tenant, role=Role.MEMBER).raw_key
    assert client_for(member_key).get("/api/v1/audit").status_code == 403
    event = AuditEvent.objects.get(pk=event_id)
    with pytest.raises(TypeError):
        event.action = "rewritten"
        event.save()
    with pytest.raises(TypeError):
        event.delete()
    assert Membership.objects.filter(tenant=tenant_a.tenant).exists()


def test_registry_service_calls_outside_a_request_act_as_system(tenant_a):
    make_model_version(tenant_a.tenant, name="m", version=1)
    registry.set_alias(tenant=tenant_a.tenant, model_name="m", alias="production", version=1)
    event = AuditEvent.objects.for_tenant(tenant_a.tenant).get(action="model.alias_set")
    assert (event.actor_kind, event.actor_label, event.request_id) == ("system", "system", "-")
