"""Hostile callers: every API route with bad credentials, missing scopes and too little role; throttles;
secrets kept out of logs, bodies and the admin; tampered manifests; CSRF and security headers.

The routes come from the URL configuration (as in ``test_isolation``), so a
new endpoint is covered without editing this file.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from unittest import mock

import pytest
from django.core.cache import cache
from django.test import Client, override_settings
from django.utils import timezone

from dashboard.middleware import CONTENT_SECURITY_POLICY
from serving.models import ModelVersion
from tenants.models import ROLE_RANK, ApiKey, Role
from tests.conftest import client_for
from tests.support.dashboard import signed_in
from tests.support.factories import make_key, make_member
from tests.support.isolation import ROUTES, call, object_for, tenant_rows, url_for
from tests.support.serving import call as serving_call
from tests.support.serving import publish_model, serving_server

pytestmark = pytest.mark.django_db
VISITOR = {"instances": ["12 85 3"]}


def route_url(route, tenant) -> str:
    from django.urls import reverse

    return url_for(route, object_for(route, tenant)) if route.kwargs else reverse(route.name)


def _is_safe(method: str) -> bool:
    return method in {"get", "head", "options"}


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_revoked_and_expired_keys_are_401_everywhere_and_change_nothing(route, tenant_a):
    revoked = make_key(tenant_a.tenant)
    ApiKey.objects.filter(pk=revoked.api_key.pk).update(revoked_at=timezone.now())
    expired = make_key(tenant_a.tenant)
    ApiKey.objects.filter(pk=expired.api_key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    url = route_url(route, tenant_a.tenant)
    before = tenant_rows(tenant_a.tenant)
    for raw, code in ((revoked.raw_key, "api_key_revoked"), (expired.raw_key, "api_key_expired")):
        for method in route.methods:
            response = call(client_for(raw), method, url)
            assert response.status_code == 401, (method, url, response.status_code)
            assert response.json()["error"]["code"] == code
    assert tenant_rows(tenant_a.tenant) == before


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_a_key_without_the_needed_scope_is_403_and_changes_nothing(route, tenant_a):
    view = route.view_class
    url = route_url(route, tenant_a.tenant)
    lacking = {  # per method, a key with every scope but the one the method needs
        method: make_key(tenant_a.tenant, scopes=[s for s in ("read", "write", "predict") if s != needed]).raw_key
        for method in route.methods
        for needed in [view.read_scope if _is_safe(method) else view.write_scope]
    }
    before = tenant_rows(tenant_a.tenant)
    for method, raw in lacking.items():
        response = call(client_for(raw), method, url)
        assert response.status_code == 403, (method, url, response.status_code)
        assert response.json()["error"]["code"] == "missing_scope"
    assert tenant_rows(tenant_a.tenant) == before


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_too_low_a_role_is_403_for_sessions_and_keys_and_changes_nothing(route, tenant_a):
    view = route.view_class
    url = route_url(route, tenant_a.tenant)
    callers = {  # a signed-in person and a key of every role
        role: (
            signed_in(make_member(tenant_a.tenant, role=role).user, tenant_a.tenant),
            client_for(make_key(tenant_a.tenant, role=role).raw_key),
        )
        for role in Role
    }
    before = tenant_rows(tenant_a.tenant)
    checked = 0
    for method in route.methods:
        needed = Role(view.read_role if _is_safe(method) else view.write_role)
        for role in (r for r in Role if ROLE_RANK[r] < ROLE_RANK[needed]):
            for client in callers[role]:
                response = call(client, method, url)
                assert response.status_code == 403, (role, method, url, response.status_code)
                assert response.json()["error"]["code"] in {"role_required", "missing_scope"}  # viewers: read only
                checked += 1
    assert tenant_rows(tenant_a.tenant) == before
    if any(not _is_safe(m) for m in route.methods) or view.read_role != Role.VIEWER:
        assert checked  # every route that changes anything has someone it refuses


def test_repeated_bad_keys_from_one_address_are_throttled(tenant_a):
    cache.clear()
    bad = "mlp_AAAAAAAAAA_" + "B" * 40
    with override_settings(AUTH_FAILURES_PER_MINUTE=5):
        for _ in range(5):
            assert client_for(bad).get("/api/v1/tenant").status_code == 401
        blocked = client_for(bad).get("/api/v1/tenant")
        assert blocked.status_code == 429 and int(blocked["Retry-After"]) <= 60
        assert blocked.json()["error"]["code"] == "throttled"
        # A valid key from the same address (a shared proxy) still works: keys are far too long to guess.
        assert client_for(tenant_a.raw_key).get("/api/v1/tenant").status_code == 200
        assert client_for(bad).get("/api/v1/tenant", REMOTE_ADDR="10.1.2.3").status_code == 401
    cache.clear()


def test_repeated_wrong_passwords_are_throttled_per_account_and_address(tenant_a, tenant_b):
    cache.clear()
    for person in (tenant_a.owner, tenant_b.owner):
        person.set_password("the-right-password")
        person.save()
    client = Client()
    with override_settings(AUTH_FAILURES_PER_MINUTE=3):
        for _ in range(3):
            wrong = client.post("/login/", {"username": tenant_a.owner.email, "password": "nope"})
            assert wrong.status_code == 400
        blocked = client.post("/login/", {"username": tenant_a.owner.email, "password": "the-right-password"})
        assert blocked.status_code == 429 and "Retry-After" in blocked
        other_person = client.post("/login/", {"username": tenant_b.owner.email, "password": "the-right-password"})
        assert other_person.status_code == 302  # same address, another account: not held back
        elsewhere = Client(REMOTE_ADDR="10.9.9.9")
        assert (
            elsewhere.post("/login/", {"username": tenant_a.owner.email, "password": "the-right-password"}).status_code
            == 302
        )
    cache.clear()


@pytest.mark.django_db(transaction=True)
def test_serving_throttles_repeated_bad_keys_per_address(tenant_a):
    publish_model(tenant_a.tenant, name="clicks")
    with serving_server(AUTH_FAILURES_PER_MINUTE=3) as (base, _app):
        for _ in range(3):
            assert serving_call(base, "POST", "/v1/models/clicks:predict", VISITOR, "mlp_bad")[0] == 401
        status, _body, headers = serving_call(base, "POST", "/v1/models/clicks:predict", VISITOR, "mlp_bad")
        assert status == 429 and int(headers["Retry-After"]) <= 60
        assert serving_call(base, "POST", "/v1/models/clicks:predict", VISITOR, tenant_a.raw_key)[0] == 200


def test_key_checks_compare_in_constant_time(tenant_a):
    import hmac

    real = tenant_a.raw_key
    wrong_secret = real[:-5] + ("x" if real[-1] != "x" else "y") * 5
    with mock.patch("tenants.keys.hmac.compare_digest", wraps=hmac.compare_digest) as compare:
        assert client_for(wrong_secret).get("/api/v1/tenant").status_code == 401
        assert client_for("mlp_malformed").get("/api/v1/tenant").status_code == 401
    assert compare.call_count == 2  # a wrong secret and a malformed key both cost one constant-time comparison


@pytest.mark.django_db(transaction=True)
def test_keys_never_reach_logs_error_bodies_or_the_admin(tenant_a, caplog, client):
    from tenants.models import User

    caplog.set_level(logging.DEBUG)
    api = client_for(tenant_a.raw_key)
    created = api.post("/api/v1/api-keys", {"name": "ci", "scopes": ["read"]}, format="json").json()["key"]
    bogus = "mlp_ZZZZZZZZZZ_" + "Q" * 40
    bodies = [client_for(k).get("/api/v1/jobs/not-a-job").content for k in (created, bogus)]
    bodies.append(client_for(bogus).get("/api/v1/tenant").content)
    publish_model(tenant_a.tenant, name="clicks")
    with serving_server() as (base, _app):
        bodies.append(str(serving_call(base, "POST", "/v1/models/clicks:predict", VISITOR, bogus)[1]).encode())
        bodies.append(str(serving_call(base, "POST", "/v1/models/nope:predict", VISITOR, tenant_a.raw_key)[1]).encode())
    operator = User.objects.create_superuser(email="ops@example.com", password="ops-password-123")
    client.force_login(operator)
    pages = [client.get("/admin/tenants/auditevent/").content, client.get("/admin/tenants/apikey/").content]
    for secret in (tenant_a.raw_key, created, bogus):
        assert secret not in caplog.text
        for blob in bodies + pages:
            assert secret.encode() not in blob


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("tamper", ["other_prefix", "escaping_path", "absolute_path"])
def test_serving_refuses_manifests_that_leave_the_versions_prefix(tenant_a, tenant_b, tamper):
    version = publish_model(tenant_a.tenant, name="clicks")
    other = publish_model(tenant_b.tenant, name="theirs")
    files = dict(version.manifest["files"])
    if tamper == "other_prefix":
        ModelVersion.objects.filter(pk=version.pk).update(object_prefix=other.object_prefix)
    else:
        name = next(iter(files))
        files["../../../theirs/1/" + name if tamper == "escaping_path" else "/etc/" + name] = files.pop(name)
        ModelVersion.objects.filter(pk=version.pk).update(manifest=version.manifest | {"files": files})
    with serving_server() as (base, app):
        status, answer, _ = serving_call(base, "POST", "/v1/models/clicks:predict", VISITOR, tenant_a.raw_key)
        assert status == 503, answer
        assert app.cache.loaded() == []


def test_dashboard_forms_need_the_csrf_token(tenant_a):
    client = Client(enforce_csrf_checks=True)
    client.force_login(tenant_a.owner)
    before = tenant_rows(tenant_a.tenant)
    assert (
        client.post("/api-keys/", {"action": "create", "name": "x", "scopes": ["read"], "role": "member"}).status_code
        == 403
    )
    session_api = client.post("/api/v1/api-keys", {"name": "x", "scopes": ["read"]}, content_type="application/json")
    assert session_api.status_code == 403  # the REST API with a session cookie needs the token too
    assert tenant_rows(tenant_a.tenant) == before
    page = client.get("/api-keys/")
    assert b"csrfmiddlewaretoken" in page.content


def test_dashboard_security_headers_and_cookie_flags(tenant_a):
    client = Client()
    login = client.get("/login/")
    assert login["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    tenant_a.owner.set_password("the-right-password")
    tenant_a.owner.save()
    response = client.post("/login/", {"username": tenant_a.owner.email, "password": "the-right-password"})
    session_cookie = response.cookies["sessionid"]
    assert session_cookie["httponly"] and session_cookie["samesite"] == "Lax"
    page = client.get("/")
    assert page["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert page["X-Frame-Options"] == "DENY" and page["X-Content-Type-Options"] == "nosniff"
    assert page["Referrer-Policy"] == "same-origin"
    assert b" onclick=" not in page.content and b" onchange=" not in page.content and b"<script>" not in page.content
