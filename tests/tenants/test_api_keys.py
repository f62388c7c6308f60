"""API keys through the API: shown once, scoped, never above their creator."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tenants.models import ApiKey, Role
from tests.conftest import client_for
from tests.support.factories import make_key

pytestmark = pytest.mark.django_db


def test_create_shows_the_key_once(api_a, tenant_a):
    response = api_a.post("/api/v1/api-keys", {"name": "ci", "scopes": ["read", "predict"]}, format="json")
    assert response.status_code == 201, response.json()
    created = response.json()
    assert created["key"].startswith("mlp_")
    assert created["scopes"] == ["predict", "read"]
    assert created["role"] == "member"

    listed = api_a.get("/api/v1/api-keys").json()
    assert listed["count"] == 2
    assert created["key"] not in str(listed)
    detail = api_a.get(f"/api/v1/api-keys/{created['id']}").json()
    assert "key" not in detail
    assert client_for(created["key"]).get("/api/v1/tenant").status_code == 200


def test_revoke_keeps_the_row_and_blocks_the_key(api_a, tenant_a):
    created = make_key(tenant_a.tenant)
    assert api_a.delete(f"/api/v1/api-keys/{created.api_key.id}").status_code == 204
    row = ApiKey.objects.get(pk=created.api_key.pk)
    assert row.revoked_at is not None
    assert api_a.get(f"/api/v1/api-keys/{row.id}").json()["revoked_at"] is not None
    assert client_for(created.raw_key).get("/api/v1/tenant").status_code == 401


def test_a_key_cannot_mint_wider_scopes_or_a_higher_role(tenant_a):
    admin = client_for(make_key(tenant_a.tenant, role=Role.ADMIN, scopes=["read", "write"]).raw_key)
    response = admin.post("/api/v1/api-keys", {"name": "x", "scopes": ["predict"]}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "scope_too_wide"
    response = admin.post("/api/v1/api-keys", {"name": "x", "scopes": ["read"], "role": "owner"}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "role_too_high"


def test_members_cannot_create_keys(tenant_a):
    member = client_for(make_key(tenant_a.tenant, role=Role.MEMBER).raw_key)
    response = member.post("/api/v1/api-keys", {"name": "x", "scopes": ["read"]}, format="json")
    assert response.status_code == 403


def test_expiry_in_the_past_is_refused(api_a):
    past = (timezone.now() - timedelta(days=1)).isoformat()
    response = api_a.post("/api/v1/api-keys", {"name": "x", "scopes": ["read"], "expires_at": past}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_expiry"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x", "scopes": ["admin"]}, "scopes"),
        ({"name": "x", "scopes": "read"}, "scopes"),
        ({"scopes": ["read"]}, "name"),
        ({"name": "x" * 101, "scopes": ["read"]}, "name"),
        ({"name": "x", "scopes": ["read"], "expires_at": "tomorrow"}, "expires_at"),
        ({"name": "x", "scopes": ["read"], "secret": "mine"}, "secret"),
    ],
)
def test_bad_key_input_is_400_and_changes_nothing(api_a, tenant_a, body, field):
    before = ApiKey.objects.count()
    response = api_a.post("/api/v1/api-keys", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["details"]
    assert ApiKey.objects.count() == before
