"""Credentials never outlive the rights of whoever made them: removal, demotion and a parent's revocation.

Every attack here worked before: a removed admin's key re-added them as admin, a demoted owner's key made them
owner again, and a key made by a key kept working after its parent was revoked (in the API and in serving).
"""

from __future__ import annotations

import time

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from tenants.models import ApiKey, AuditEvent, Membership, User
from tests.conftest import client_for
from tests.support.dashboard import signed_in
from tests.support.serving import publish_model, serving_server

pytestmark = pytest.mark.django_db

ALL_SCOPES = ["read", "write", "predict"]
PREDICT = "/v1/models/clicks:predict", {"instances": ["1 2 3"]}


def session_api(user: User, tenant) -> APIClient:
    """The API as a signed-in person (their session), in ``tenant``."""
    client = APIClient()
    client.force_login(user)
    client.credentials(HTTP_X_TENANT=tenant.slug)
    return client


def add_member(api: APIClient, email: str, role: str) -> tuple[str, User]:
    response = api.post("/api/v1/members", {"email": email, "role": role}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["id"], User.objects.get(email=email)


def new_key(api: APIClient, *, role: str, name: str = "k", scopes=ALL_SCOPES) -> dict:
    response = api.post("/api/v1/api-keys", {"name": name, "scopes": list(scopes), "role": role}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def refused(raw_key: str, code: str = "api_key_revoked") -> None:
    response = client_for(raw_key).get("/api/v1/tenant")
    assert response.status_code == 401, response.json()
    assert response.json()["error"]["code"] == code


def revocations(tenant) -> dict[str, dict]:
    """Each revoked key's prefix -> the details of its audit row."""
    rows = AuditEvent.objects.for_tenant(tenant).filter(action="api_key.revoke")
    return {row.details["prefix"]: row.details | {"actor": row.actor_label} for row in rows}


# --- Removal ------------------------------------------------------------------------------------------------------


def test_a_removed_admins_key_is_refused_and_cannot_re_add_them(api_a, tenant_a):
    member_id, admin = add_member(api_a, "admin@example.com", "admin")
    admin_key = new_key(session_api(admin, tenant_a.tenant), role="admin")
    child = new_key(client_for(admin_key["key"]), role="admin", name="made by the admin's key")

    assert api_a.delete(f"/api/v1/members/{member_id}").status_code == 204

    attempt = client_for(admin_key["key"]).post(
        "/api/v1/members", {"email": "admin@example.com", "role": "admin"}, format="json"
    )
    assert attempt.status_code == 401 and attempt.json()["error"]["code"] == "api_key_revoked"
    assert not Membership.objects.for_tenant(tenant_a.tenant).filter(user=admin).exists()
    refused(admin_key["key"])
    refused(child["key"])
    audit = revocations(tenant_a.tenant)
    assert audit[admin_key["prefix"]]["cascade_from"] == {"member": "admin@example.com"}
    assert audit[child["prefix"]]["cascade_from"] == {"api_key": admin_key["prefix"]}
    assert {audit[admin_key["prefix"]]["actor"], audit[child["prefix"]]["actor"]} == {
        f"api_key:{tenant_a.api_key.prefix}"
    }
    removal = AuditEvent.objects.for_tenant(tenant_a.tenant).get(action="member.remove")
    assert removal.details["api_keys_revoked"] == [admin_key["prefix"]]


def test_a_key_whose_creator_left_without_the_services_acts_with_nothing(api_a, tenant_a):
    """Even if a membership disappears some other way, the key is read against the membership on every use."""
    _, admin = add_member(api_a, "gone@example.com", "admin")
    admin_key = new_key(session_api(admin, tenant_a.tenant), role="admin")
    Membership.objects.for_tenant(tenant_a.tenant).filter(user=admin).delete()
    refused(admin_key["key"], code="api_key_creator_gone")
    assert ApiKey.objects.get(prefix=admin_key["prefix"]).revoked_at is None  # refused by the lookup itself


def test_deleting_a_person_in_the_admin_revokes_their_keys(api_a, tenant_a):
    _, admin = add_member(api_a, "leaver@example.com", "admin")
    admin_key = new_key(session_api(admin, tenant_a.tenant), role="admin")
    child = new_key(client_for(admin_key["key"]), role="member")
    operator = Client()
    operator.force_login(User.objects.create_superuser(email="ops@platform.test", password="ops-password-123"))

    response = operator.post(f"/admin/tenants/user/{admin.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302 and not User.objects.filter(pk=admin.pk).exists()
    refused(admin_key["key"])  # created_by is now null: without the revocation it would look like an operator's key
    refused(child["key"])
    assert set(revocations(tenant_a.tenant)) == {admin_key["prefix"], child["prefix"]}


# --- Demotion -----------------------------------------------------------------------------------------------------


def test_a_demoted_owners_key_cannot_promote_them_back_and_acts_as_the_new_role(api_a, tenant_a):
    member_id, second_owner = add_member(api_a, "owner2@example.com", "owner")
    owner_key = new_key(session_api(second_owner, tenant_a.tenant), role="owner")
    owners_client = client_for(owner_key["key"])
    assert owners_client.get("/api/v1/tenant").json()["caller"]["role"] == "owner"

    assert api_a.patch(f"/api/v1/members/{member_id}", {"role": "admin"}, format="json").status_code == 200

    promote = owners_client.patch(f"/api/v1/members/{member_id}", {"role": "owner"}, format="json")
    assert promote.status_code == 403 and promote.json()["error"]["code"] == "role_too_high"
    assert Membership.objects.get(pk=member_id).role == "admin"
    assert owners_client.get("/api/v1/tenant").json()["caller"]["role"] == "admin"
    owner_grant = owners_client.post(
        "/api/v1/api-keys", {"name": "x", "scopes": ["read"], "role": "owner"}, format="json"
    )
    assert owner_grant.status_code == 403
    demotion = AuditEvent.objects.for_tenant(tenant_a.tenant).get(action="member.role")
    assert demotion.details["api_keys_capped"] == [owner_key["prefix"]]

    # Down to viewer: the key loses the write scope too, as the person has.
    assert api_a.patch(f"/api/v1/members/{member_id}", {"role": "viewer"}, format="json").status_code == 200
    caller = owners_client.get("/api/v1/tenant").json()["caller"]
    assert caller["role"] == "viewer" and caller["scopes"] == ["read"]
    write = owners_client.post("/api/v1/api-keys", {"name": "x", "scopes": ["read"]}, format="json")
    assert write.status_code == 403

    # Promoted again, the key acts with its own role again: it follows the person's current rights.
    assert api_a.patch(f"/api/v1/members/{member_id}", {"role": "owner"}, format="json").status_code == 200
    assert owners_client.get("/api/v1/tenant").json()["caller"]["role"] == "owner"


def test_a_key_made_by_a_demoted_persons_key_is_capped_too(api_a, tenant_a):
    member_id, admin = add_member(api_a, "admin2@example.com", "admin")
    admin_key = new_key(session_api(admin, tenant_a.tenant), role="admin")
    child = new_key(client_for(admin_key["key"]), role="admin")
    assert api_a.patch(f"/api/v1/members/{member_id}", {"role": "member"}, format="json").status_code == 200
    assert client_for(child["key"]).get("/api/v1/tenant").json()["caller"]["role"] == "member"
    add = client_for(child["key"]).post("/api/v1/members", {"email": "x@example.com", "role": "viewer"}, format="json")
    assert add.status_code == 403


def test_a_demotion_in_the_dashboard_binds_the_keys_at_once(api_a, tenant_a):
    member_id, admin = add_member(api_a, "dash-admin@example.com", "admin")
    admin_key = new_key(session_api(admin, tenant_a.tenant), role="admin")
    owner = signed_in(tenant_a.owner, tenant_a.tenant)
    members = reverse("dashboard:members")
    assert owner.post(members, {"action": "role", "member": member_id, "role": "viewer"}).status_code == 302
    assert client_for(admin_key["key"]).get("/api/v1/tenant").json()["caller"]["role"] == "viewer"
    assert owner.post(members, {"action": "remove", "member": member_id}).status_code == 302
    refused(admin_key["key"])


# --- Keys made by keys ----------------------------------------------------------------------------------------------


def test_revoking_a_key_revokes_its_children_and_grandchildren(api_a, tenant_a):
    parent = new_key(api_a, role="admin", name="parent")
    child = new_key(client_for(parent["key"]), role="admin", name="child")
    grandchild = new_key(client_for(child["key"]), role="member", name="grandchild")
    sibling = new_key(api_a, role="admin", name="unrelated")
    assert client_for(grandchild["key"]).get("/api/v1/tenant").status_code == 200

    assert api_a.delete(f"/api/v1/api-keys/{parent['id']}").status_code == 204

    refused(child["key"])
    refused(grandchild["key"])
    assert client_for(sibling["key"]).get("/api/v1/tenant").status_code == 200
    listed = {row["prefix"]: row for row in api_a.get("/api/v1/api-keys").json()["results"]}
    assert all(listed[k["prefix"]]["revoked_at"] for k in (parent, child, grandchild))
    assert listed[sibling["prefix"]]["revoked_at"] is None
    audit = revocations(tenant_a.tenant)
    assert "cascade_from" not in audit[parent["prefix"]]
    assert audit[child["prefix"]]["cascade_from"] == {"api_key": parent["prefix"]}
    assert audit[grandchild["prefix"]]["cascade_from"] == {"api_key": child["prefix"]}
    actor = f"api_key:{tenant_a.api_key.prefix}"
    assert {row["actor"] for row in audit.values()} == {actor}


def test_revoking_a_middle_key_leaves_its_parent_working(api_a, tenant_a):
    parent = new_key(api_a, role="admin")
    child = new_key(client_for(parent["key"]), role="admin")
    grandchild = new_key(client_for(child["key"]), role="member")
    assert client_for(parent["key"]).delete(f"/api/v1/api-keys/{child['id']}").status_code == 204
    refused(grandchild["key"])
    assert client_for(parent["key"]).get("/api/v1/tenant").status_code == 200


def test_a_child_is_refused_whenever_its_parent_cannot_act(api_a, tenant_a):
    """The lookup walks the parents on every use: a parent revoked by any path (or a race) stops its children."""
    parent = new_key(api_a, role="admin")
    child = new_key(client_for(parent["key"]), role="admin")
    ApiKey.objects.filter(prefix=parent["prefix"]).update(revoked_at="2000-01-01T00:00:00Z")
    refused(child["key"], code="api_key_parent_unusable")


def test_the_key_list_shows_who_made_each_key(api_a, tenant_a):
    _, admin = add_member(api_a, "maker@example.com", "admin")
    person_made = new_key(session_api(admin, tenant_a.tenant), role="admin", name="person-made")
    key_made = new_key(client_for(person_made["key"]), role="member", name="key-made")
    assert key_made["parent"] == person_made["prefix"]
    listed = {row["name"]: row for row in api_a.get("/api/v1/api-keys").json()["results"]}
    assert listed["person-made"]["created_by"] == "maker@example.com" and listed["person-made"]["parent"] is None
    assert listed["key-made"]["created_by"] is None and listed["key-made"]["parent"] == person_made["prefix"]
    detail = api_a.get(f"/api/v1/api-keys/{key_made['id']}").json()
    assert detail["parent"] == person_made["prefix"]


def test_the_dashboard_key_page_shows_who_made_each_key(api_a, tenant_a):
    _, admin = add_member(api_a, "maker2@example.com", "admin")
    person_made = new_key(session_api(admin, tenant_a.tenant), role="admin", name="person-made")
    key_made = new_key(client_for(person_made["key"]), role="member", name="key-made")
    page = signed_in(tenant_a.owner, tenant_a.tenant).get(reverse("dashboard:api-keys"))
    assert page.status_code == 200
    rows = {row.split("</td>")[0].rsplit(">", 1)[-1]: row for row in page.content.decode().split("<tr>")[1:]}
    assert "maker2@example.com" in rows["person-made"]
    assert f'key <span class="mono">{person_made["prefix"]}…</span>' in rows["key-made"]
    assert key_made["prefix"] in rows["key-made"]


# --- Serving ------------------------------------------------------------------------------------------------------


def predict(base: str, raw_key: str) -> int:
    import json
    import urllib.error
    import urllib.request

    path, body = PREDICT
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST")
    request.add_header("Authorization", f"Bearer {raw_key}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.django_db(transaction=True)
def test_serving_refuses_a_child_of_a_revoked_parent_and_a_removed_or_demoted_persons_keys(tenant_a):
    api = client_for(tenant_a.raw_key)
    publish_model(tenant_a.tenant, name="clicks")
    parent = new_key(api, role="admin", scopes=["read", "write", "predict"])
    child = new_key(client_for(parent["key"]), role="member", scopes=["predict"])
    removed_id, removed = add_member(api, "removed@example.com", "admin")
    removed_key = new_key(session_api(removed, tenant_a.tenant), role="admin", scopes=["predict"])
    demoted_id, demoted = add_member(api, "demoted@example.com", "admin")
    demoted_key = new_key(session_api(demoted, tenant_a.tenant), role="admin", scopes=["predict"])
    keys = (child, removed_key, demoted_key)

    with serving_server(SERVING_ROUTE_TTL_SECONDS=60) as (base, _):
        assert [predict(base, k["key"]) for k in keys] == [200, 200, 200]  # each key is cached for a minute now
        assert api.delete(f"/api/v1/api-keys/{parent['id']}").status_code == 204
        assert api.delete(f"/api/v1/members/{removed_id}").status_code == 204
        assert api.patch(f"/api/v1/members/{demoted_id}", {"role": "viewer"}, format="json").status_code == 200
        time.sleep(0.8)  # one poll of SERVING_SUSPENSION_POLL_MILLISECONDS (500), not the 60 s cache
        assert [predict(base, k["key"]) for k in keys] == [401, 401, 403]  # a viewer cannot predict
        assert api.patch(f"/api/v1/members/{demoted_id}", {"role": "member"}, format="json").status_code == 200
        time.sleep(0.8)
        assert predict(base, demoted_key["key"]) == 200
        assert predict(base, tenant_a.raw_key) == 200  # the tenant's other keys are untouched


# --- The founder's first key, chain depth, keys made before lineage was recorded -----------------------------------


def test_the_founders_first_key_follows_the_founder(api_a, tenant_a):
    """create_tenant's all-scope owner key is the founder's: demoted, it acts as the new role; removed, nothing."""
    _, second_owner = add_member(api_a, "cofounder@example.com", "owner")
    second = session_api(second_owner, tenant_a.tenant)
    founder = Membership.objects.get(tenant=tenant_a.tenant, user=tenant_a.owner)

    assert second.patch(f"/api/v1/members/{founder.pk}", {"role": "admin"}, format="json").status_code == 200
    assert api_a.get("/api/v1/tenant").json()["caller"]["role"] == "admin"
    promote = api_a.patch(f"/api/v1/members/{founder.pk}", {"role": "owner"}, format="json")
    assert promote.status_code == 403
    assert Membership.objects.get(pk=founder.pk).role == "admin"

    assert second.delete(f"/api/v1/members/{founder.pk}").status_code == 204
    refused(tenant_a.raw_key)


def test_keys_made_by_keys_are_at_most_four_deep(api_a):
    client = api_a
    for _ in range(4):
        made = new_key(client, role="owner")
        client = client_for(made["key"])
    too_deep = client.post("/api/v1/api-keys", {"name": "k", "scopes": ["read"], "role": "viewer"}, format="json")
    assert too_deep.status_code == 403 and too_deep.json()["error"]["code"] == "key_chain_too_deep"
    assert client.get("/api/v1/tenant").status_code == 200  # the deepest allowed key still acts


@pytest.fixture
def latest_schema_after():
    """Whatever the test did to the schema, the tests after it find the latest one."""
    yield
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_keys_made_before_lineage_was_recorded_get_their_maker_from_the_audit_log(latest_schema_after):
    """The migration gives old keys their parent key or person, and the founder's first key its founder."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    before, after = [("tenants", "0004_keys_lineage_prices_idempotency")], [("tenants", "0005_key_lineage_backfill")]
    executor.migrate(before)
    apps = executor.loader.project_state(before).apps
    Tenant, Plan, User = (apps.get_model("tenants", name) for name in ("Tenant", "Plan", "User"))
    ApiKey, AuditEvent = apps.get_model("tenants", "ApiKey"), apps.get_model("tenants", "AuditEvent")
    plan = Plan.objects.create(slug="old", name="Old")
    tenant = Tenant.objects.create(name="Old", slug="old-tenant", plan=plan)
    founder = User.objects.create(email="founder@old.test")
    operator = User.objects.create(email="operator@old.test")

    def key(prefix: str, role: str = "owner"):
        return ApiKey.objects.create(tenant=tenant, name=prefix, prefix=prefix, key_hash="0" * 64, role=role)

    def made(api_key, *, kind: str, user=None, by_key=None):
        AuditEvent.objects.create(
            tenant=tenant,
            action="api_key.create",
            target_type="apikey",
            target_id=str(api_key.pk),
            actor_kind=kind,
            actor_label=kind,
            actor_user=user,
            actor_api_key=by_key,
        )

    AuditEvent.objects.create(
        tenant=tenant,
        action="tenant.create",
        target_type="tenant",
        target_id=str(tenant.pk),
        actor_kind="operator",
        actor_label="operator:operator@old.test",
        actor_user=operator,
        details={"owner": founder.email},
    )
    first = key("first")
    made(first, kind="operator", user=operator)  # an operator's action: not the operator's key
    by_person, by_key, by_command = key("person", "member"), key("child", "member"), key("command", "member")
    made(by_person, kind="user", user=founder)
    made(by_key, kind="api_key", by_key=first)
    made(by_command, kind="system")

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(after)

    rows = {row.prefix: row for row in ApiKey.objects.filter(tenant_id=tenant.pk)}
    assert rows["first"].created_by_id == founder.pk and rows["first"].parent_id is None
    assert rows["person"].created_by_id == founder.pk
    assert rows["child"].parent_id == first.pk and rows["child"].created_by_id is None
    assert rows["command"].created_by_id is None and rows["command"].parent_id is None  # an operator's key
