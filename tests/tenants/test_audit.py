"""The audit log: every change made through a service writes exactly one row naming its actor and request."""

from __future__ import annotations

import pytest

from datasets import services as dataset_services
from serving import services as registry
from tenants.models import AuditEvent, Membership, Role, User
from tests.conftest import client_for
from tests.support.datasets import PART, big_csv, start, upload
from tests.support.factories import CTR_CSV, make_key, make_member, make_model_version
from tests.support.jobs import submit

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


def test_every_changing_endpoint_writes_one_audit_row(tenant_a, api_a):
    tenant = tenant_a.tenant
    actor = f"api-key:{tenant_a.api_key.prefix}"

    def check(response, action, status=(200, 201, 202, 204)):
        assert response.status_code in status, response.content[:300]
        return one_event(tenant, before, response, action, actor)

    before = ids(tenant)
    created = api_a.post("/api/v1/api-keys", {"name": "ci", "scopes": ["read"], "role": "viewer"}, format="json")
    event = check(created, "api_key.create")
    assert created.json()["key"] not in str(event.details)  # never the secret
    before = ids(tenant)
    check(api_a.delete(f"/api/v1/api-keys/{created.json()['id']}"), "api_key.revoke")

    before = ids(tenant)
    member = api_a.post("/api/v1/members", {"email": "new@example.com", "role": "member"}, format="json")
    check(member, "member.add")
    before = ids(tenant)
    check(api_a.patch(f"/api/v1/members/{member.json()['id']}", {"role": "viewer"}, format="json"), "member.role")
    before = ids(tenant)
    check(api_a.delete(f"/api/v1/members/{member.json()['id']}"), "member.remove")

    before = ids(tenant)
    dataset = upload(api_a, CTR_CSV, name="clicks", label_column="clicked")
    check(dataset, "dataset.create")
    dataset_services.validate_dataset(dataset_id=dataset.json()["id"])
    before = ids(tenant)
    job = submit(api_a, dataset.json()["id"])
    check(job, "job.create")
    before = ids(tenant)
    check(api_a.post(f"/api/v1/jobs/{job.json()['id']}/cancel"), "job.cancel")
    before = ids(tenant)
    check(api_a.delete(f"/api/v1/datasets/{dataset.json()['id']}"), "dataset.delete")

    before = ids(tenant)
    pending = start(api_a, big_csv(PART + 10))
    check(pending, "dataset.upload_start")
    before = ids(tenant)
    check(api_a.delete(f"/api/v1/datasets/uploads/{pending.json()['id']}"), "dataset.upload_abort")

    make_model_version(tenant, name="clicks", version=1)
    make_model_version(tenant, name="clicks", version=2)
    before = ids(tenant)
    check(api_a.put("/api/v1/models/clicks/aliases/production", {"version": 1}, format="json"), "model.alias_set")
    before = ids(tenant)
    check(api_a.delete("/api/v1/models/clicks/aliases/production"), "model.alias_deleted")
    before = ids(tenant)
    check(api_a.put("/api/v1/models/clicks/traffic", {"weights": {"1": 100}}, format="json"), "model.traffic_set")
    before = ids(tenant)
    check(api_a.post("/api/v1/models/clicks/versions/2/archive"), "model.version_archived")
    before = ids(tenant)
    check(api_a.delete("/api/v1/models/clicks/versions/2"), "model.version_deleted")


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
    registry.set_alias(tenant=tenant_a.tenant, model_name="m", alias="production", version=1, actor="cli")
    event = AuditEvent.objects.for_tenant(tenant_a.tenant).get(action="model.alias_set")
    assert (event.actor_kind, event.actor_label, event.request_id) == ("system", "system", "-")
