"""Tenant isolation, proved for every route of the API.

The routes come from the URL configuration itself, so an endpoint added to
a router is covered here without editing this file. For every route with an
object in its URL, tenant B's owner key (all scopes) must get 404 for tenant
A's object with every method, and no row of tenant A may change. List
routes must not leak any of tenant A's ids.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from tenants.scoping import TenantScopedAPIView, TenantScopedViewSet
from tests.conftest import client_for
from tests.support.factories import OBJECT_FACTORIES
from tests.support.isolation import DETAIL_ROUTES, LIST_ROUTES, ROUTES, call, object_for, tenant_rows, url_for


def test_the_api_has_routes_to_check():
    assert DETAIL_ROUTES and LIST_ROUTES


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_every_api_view_is_tenant_scoped(route):
    assert issubclass(route.view_class, TenantScopedAPIView), f"{route} must derive from TenantScopedAPIView"
    if route.kwargs:
        assert issubclass(route.view_class, TenantScopedViewSet), f"{route} must derive from TenantScopedViewSet"


@pytest.mark.django_db
@pytest.mark.parametrize("route", DETAIL_ROUTES, ids=str)
def test_other_tenants_objects_are_404_and_unchanged(route, tenant_a, tenant_b, api_b):
    obj = object_for(route, tenant_a.tenant)
    url = url_for(route, obj)
    before = tenant_rows(tenant_a.tenant)
    for method in route.methods:
        response = call(api_b, method, url)
        assert response.status_code == 404, f"{method.upper()} {url} with tenant B's key: {response.status_code}"
        assert response.json()["error"]["code"] == "not_found"
    assert tenant_rows(tenant_a.tenant) == before

    # The same object is reachable by its own tenant, so the 404 above is isolation, not a broken route.
    own = client_for(tenant_a.raw_key).get(url)
    if "get" in route.methods:
        assert own.status_code == 200, f"GET {url} with tenant A's own key: {own.status_code}"


@pytest.mark.django_db
@pytest.mark.parametrize("route", LIST_ROUTES, ids=str)
def test_lists_never_show_other_tenants_ids(route, tenant_a, tenant_b, api_b):
    for factory in OBJECT_FACTORIES.values():
        factory(tenant_a.tenant)
    # UUIDs only: small integer keys (log lines, epochs) would match any digit in a body.
    a_ids = {pk for (_, pk) in tenant_rows(tenant_a.tenant) if len(pk) == 36} | {str(tenant_a.tenant.pk)}
    response = api_b.get(reverse(route.name))
    assert response.status_code == 200
    body = response.content.decode()
    leaked = sorted(pk for pk in a_ids if pk in body)
    assert not leaked, f"{route} shows tenant A's ids to tenant B: {leaked}"


@pytest.mark.django_db
@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_every_route_needs_credentials(route, tenant_a):
    obj = object_for(route, tenant_a.tenant) if route.kwargs else None
    url = url_for(route, obj) if obj is not None else reverse(route.name)
    anonymous = client_for(None)
    for method in route.methods:
        response = call(anonymous, method, url)
        assert response.status_code == 401, f"{method.upper()} {url} without credentials: {response.status_code}"
        assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.django_db
@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_suspended_tenant_is_refused_everywhere(route, tenant_a):
    obj = object_for(route, tenant_a.tenant) if route.kwargs else None
    url = url_for(route, obj) if obj is not None else reverse(route.name)
    tenant_a.tenant.status = "suspended"
    tenant_a.tenant.save()
    before = tenant_rows(tenant_a.tenant)
    for method in route.methods:
        response = call(client_for(tenant_a.raw_key), method, url)
        assert response.status_code == 403, f"{method.upper()} {url} for a suspended tenant: {response.status_code}"
        assert response.json()["error"]["code"] == "tenant_suspended"
    assert tenant_rows(tenant_a.tenant) == before
