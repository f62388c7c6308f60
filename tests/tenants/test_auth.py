"""API-key and session authentication, scopes and roles."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tenants import keys
from tenants.models import ApiKey, Role
from tests.conftest import client_for
from tests.support.factories import make_key, make_member

pytestmark = pytest.mark.django_db


def test_valid_key_identifies_tenant_and_caller(api_a, tenant_a):
    response = api_a.get("/api/v1/tenant")
    assert response.status_code == 200
    body = response.json()
    assert body["tenant"]["id"] == str(tenant_a.tenant.id)
    assert body["tenant"]["plan"]["max_concurrent_jobs"] >= 1
    assert body["caller"] == {
        "type": "api_key",
        "role": "owner",
        "scopes": ["predict", "read", "write"],
        "api_key": body["caller"]["api_key"],
    }
    assert body["caller"]["api_key"]["prefix"] == tenant_a.api_key.prefix
    assert "key_hash" not in response.content.decode()


def test_only_a_hash_is_stored(tenant_a):
    row = ApiKey.objects.get(pk=tenant_a.api_key.pk)
    assert tenant_a.raw_key not in str(row.__dict__)
    assert row.key_hash == keys.hash_key(tenant_a.raw_key)


@pytest.mark.parametrize(
    "header",
    [
        "Bearer mlp_notakey",
        "Bearer",
        "Bearer a b",
        "Bearer mlp_AAAAAAAAAA_" + "A" * 40,
        "Bearer ünïcode",
    ],
)
def test_bad_keys_are_401_with_envelope(header, tenant_a):
    client = client_for(None)
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/v1/tenant")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_wrong_secret_with_a_real_prefix_is_refused(tenant_a):
    forged = f"mlp_{tenant_a.api_key.prefix}_" + "x" * 40
    response = client_for(forged).get("/api/v1/tenant")
    assert response.status_code == 401


def test_revoked_key_is_refused(tenant_a):
    created = make_key(tenant_a.tenant)
    client = client_for(created.raw_key)
    assert client.get("/api/v1/tenant").status_code == 200
    assert client_for(tenant_a.raw_key).delete(f"/api/v1/api-keys/{created.api_key.id}").status_code == 204
    response = client.get("/api/v1/tenant")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "api_key_revoked"


def test_expired_key_is_refused(tenant_a):
    created = make_key(tenant_a.tenant, expires_at=timezone.now() + timedelta(seconds=30))
    ApiKey.objects.filter(pk=created.api_key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = client_for(created.raw_key).get("/api/v1/tenant")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "api_key_expired"


def test_last_used_is_recorded(tenant_a, api_a):
    assert ApiKey.objects.get(pk=tenant_a.api_key.pk).last_used_at is None
    api_a.get("/api/v1/tenant")
    assert ApiKey.objects.get(pk=tenant_a.api_key.pk).last_used_at is not None


def test_read_only_key_cannot_write(tenant_a):
    created = make_key(tenant_a.tenant, scopes=["read"])
    client = client_for(created.raw_key)
    assert client.get("/api/v1/members").status_code == 200
    response = client.post("/api/v1/members", {"email": "x@example.com"}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "missing_scope"


def test_predict_only_key_cannot_read_the_api(tenant_a):
    created = make_key(tenant_a.tenant, scopes=["predict"])
    response = client_for(created.raw_key).get("/api/v1/tenant")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "missing_scope"


def test_session_login_with_tenant_header(tenant_a, tenant_b, client):
    member = make_member(tenant_a.tenant, role=Role.VIEWER)
    member.user.set_password("s3cret-passw0rd")
    member.user.save()
    make_member(tenant_b.tenant, role=Role.ADMIN, email=member.user.email)
    assert client.login(email=member.user.email, password="s3cret-passw0rd")

    # In two tenants and no choice made: refused with a clear code.
    response = client.get("/api/v1/tenant")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "tenant_required"

    response = client.get("/api/v1/tenant", HTTP_X_TENANT=tenant_a.tenant.slug)
    assert response.status_code == 200
    assert response.json()["caller"] == {
        "type": "user",
        "role": "viewer",
        "scopes": ["read"],
        "email": member.user.email,
    }
    response = client.get("/api/v1/tenant", HTTP_X_TENANT=str(tenant_b.tenant.id))
    assert response.json()["caller"]["role"] == "admin"


def test_session_user_cannot_pick_a_tenant_they_do_not_belong_to(tenant_a, tenant_b, client):
    member = make_member(tenant_a.tenant)
    member.user.set_password("s3cret-passw0rd")
    member.user.save()
    client.login(email=member.user.email, password="s3cret-passw0rd")
    response = client.get("/api/v1/members", HTTP_X_TENANT=tenant_b.tenant.slug)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "tenant_required"


def test_viewer_session_cannot_change_anything(tenant_a, client):
    viewer = make_member(tenant_a.tenant, role=Role.VIEWER)
    viewer.user.set_password("s3cret-passw0rd")
    viewer.user.save()
    client.login(email=viewer.user.email, password="s3cret-passw0rd")
    response = client.post("/api/v1/api-keys", {"name": "x", "scopes": ["read"]}, content_type="application/json")
    assert response.status_code == 403
    assert ApiKey.objects.for_tenant(tenant_a.tenant).count() == 1
