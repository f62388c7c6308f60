"""Members and roles through the API: owners and admins manage, nobody locks the tenant out."""

import pytest

from tenants.models import Membership, Role
from tests.conftest import client_for
from tests.support.factories import make_key, make_member

pytestmark = pytest.mark.django_db


def test_list_members(api_a, tenant_a):
    response = api_a.get("/api/v1/members")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    assert body["results"][0]["email"] == tenant_a.owner.email
    assert body["results"][0]["role"] == "owner"


def test_add_change_and_remove_a_member(api_a, tenant_a):
    response = api_a.post("/api/v1/members", {"email": "New.Person@Example.com", "role": "member"}, format="json")
    assert response.status_code == 201, response.json()
    member = response.json()
    assert member["email"] == "new.person@example.com"

    response = api_a.patch(f"/api/v1/members/{member['id']}", {"role": "viewer"}, format="json")
    assert response.status_code == 200
    assert response.json()["role"] == "viewer"

    assert api_a.delete(f"/api/v1/members/{member['id']}").status_code == 204
    assert not Membership.objects.filter(pk=member["id"]).exists()


def test_adding_someone_twice_is_a_conflict(api_a, tenant_a):
    api_a.post("/api/v1/members", {"email": "twice@example.com"}, format="json")
    response = api_a.post("/api/v1/members", {"email": "twice@example.com"}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "already_member"


def test_the_last_owner_cannot_leave_or_be_demoted(api_a, tenant_a):
    owner_membership = Membership.objects.get(tenant=tenant_a.tenant, role=Role.OWNER)
    response = api_a.patch(f"/api/v1/members/{owner_membership.id}", {"role": "admin"}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "last_owner"
    assert api_a.delete(f"/api/v1/members/{owner_membership.id}").status_code == 409

    make_member(tenant_a.tenant, role=Role.OWNER)
    assert api_a.delete(f"/api/v1/members/{owner_membership.id}").status_code == 204


def test_members_and_viewers_cannot_manage_members(tenant_a):
    for role in (Role.MEMBER, Role.VIEWER):
        client = client_for(make_key(tenant_a.tenant, role=role).raw_key)
        assert client.get("/api/v1/members").status_code == 200
        response = client.post("/api/v1/members", {"email": f"{role}@example.com"}, format="json")
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "role_required"


def test_admin_cannot_create_or_touch_owners(tenant_a):
    admin = client_for(make_key(tenant_a.tenant, role=Role.ADMIN).raw_key)
    response = admin.post("/api/v1/members", {"email": "boss@example.com", "role": "owner"}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "role_too_high"
    owner_membership = Membership.objects.get(tenant=tenant_a.tenant, role=Role.OWNER)
    assert admin.delete(f"/api/v1/members/{owner_membership.id}").status_code == 403
    assert (
        admin.post("/api/v1/members", {"email": "helper@example.com", "role": "admin"}, format="json").status_code
        == 201
    )


@pytest.mark.parametrize(
    "body, field",
    [
        ({"email": "not-an-email"}, "email"),
        ({"email": "a@example.com", "role": "emperor"}, "role"),
        ({"email": "a@example.com", "colour": "blue"}, "colour"),
        ({}, "email"),
        ({"email": ["a@example.com"]}, "email"),
    ],
)
def test_bad_member_input_is_400_and_changes_nothing(api_a, tenant_a, body, field):
    before = Membership.objects.count()
    response = api_a.post("/api/v1/members", body, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["details"]
    assert Membership.objects.count() == before
