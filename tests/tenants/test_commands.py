"""Operators' management commands for tenants and keys."""

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tenants.models import ApiKey, Membership, Tenant
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_tenant_json_prints_a_working_key():
    payload = json.loads(run("create_tenant", "--name", "Acme Retail", "--owner-email", "ops@acme.test", "--json"))
    assert set(payload) == {"tenant_id", "slug", "api_key"}
    tenant = Tenant.objects.get(pk=payload["tenant_id"])
    assert tenant.slug == payload["slug"] == "acme-retail"
    assert Membership.objects.get(tenant=tenant).role == "owner"
    response = client_for(payload["api_key"]).get("/api/v1/tenant")
    assert response.json()["tenant"]["slug"] == "acme-retail"


def test_create_tenant_makes_slugs_unique():
    first = json.loads(run("create_tenant", "--name", "Same", "--owner-email", "a@x.test", "--json"))
    second = json.loads(run("create_tenant", "--name", "Same", "--owner-email", "b@x.test", "--json"))
    assert first["slug"] != second["slug"]


def test_create_tenant_refuses_a_taken_slug():
    run("create_tenant", "--name", "One", "--owner-email", "a@x.test", "--slug", "taken")
    with pytest.raises(CommandError, match="already exists"):
        run("create_tenant", "--name", "Two", "--owner-email", "b@x.test", "--slug", "taken")


def test_create_api_key_with_scopes():
    tenant = json.loads(run("create_tenant", "--name", "Keys Inc", "--owner-email", "k@x.test", "--json"))
    payload = json.loads(run("create_api_key", "--tenant", tenant["slug"], "--scopes", "read,predict", "--json"))
    assert payload["scopes"] == ["predict", "read"]
    key = ApiKey.objects.get(pk=payload["id"])
    assert key.tenant_id.hex == tenant["tenant_id"].replace("-", "")
    assert (
        client_for(payload["api_key"]).post("/api/v1/members", {"email": "z@x.test"}, format="json").status_code == 403
    )


def test_create_api_key_rejects_unknown_tenant_and_scopes():
    with pytest.raises(CommandError, match="no tenant"):
        run("create_api_key", "--tenant", "nope")
    tenant = json.loads(run("create_tenant", "--name", "Scopes", "--owner-email", "s@x.test", "--json"))
    with pytest.raises(CommandError, match="Scopes"):
        run("create_api_key", "--tenant", tenant["slug"], "--scopes", "read,root")
