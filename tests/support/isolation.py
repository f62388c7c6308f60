"""The tenant isolation harness: every API route from the URL configuration, an object of tenant A's for a route,
the route's URL for it, a request with any method, and a snapshot of a tenant's rows to prove nothing changed.

The isolation tests, the hostile-caller tests, the list query counts, the dashboard and the chaos tests all
compare a tenant's rows before and after, so the harness lives here rather than in one of them.
"""

from __future__ import annotations

import json

from django.apps import apps
from django.forms.models import model_to_dict
from django.urls import reverse

from tenants.models import TenantOwnedModel
from tests.support.factories import OBJECT_FACTORIES
from tests.support.routes import api_routes

ROUTES = api_routes()
DETAIL_ROUTES = [r for r in ROUTES if r.kwargs]
LIST_ROUTES = [r for r in ROUTES if not r.kwargs and "get" in r.methods]

# Bookkeeping that a refused request may still touch (a key's last use).
VOLATILE_FIELDS = {"last_used_at"}


def tenant_rows(tenant) -> dict:
    """Every tenant-owned row of ``tenant``, as plain dicts, keyed by model and pk."""
    rows = {}
    for model in apps.get_models():
        if issubclass(model, TenantOwnedModel):
            for obj in model.objects.for_tenant(tenant):
                fields = [f.name for f in model._meta.concrete_fields if f.name not in VOLATILE_FIELDS]
                rows[(model._meta.label, str(obj.pk))] = model_to_dict(obj, fields=fields)
    return rows


def object_for(route, tenant):
    model = getattr(route.view_class, "scoped_model", None)
    assert model is not None, f"{route}: a route with an object id needs a TenantScopedViewSet with scoped_model"
    factory = OBJECT_FACTORIES.get(model)
    assert factory is not None, f"add a factory for {model.__name__} to tests.support.factories.OBJECT_FACTORIES"
    return factory(tenant)


def url_for(route, obj) -> str:
    """The route's URL for ``obj``: views with nested URLs say how (``url_kwargs_for``), others use lookup_field."""
    view = route.view_class
    known = view.url_kwargs_for(obj) if hasattr(view, "url_kwargs_for") else {}
    lookup = str(getattr(obj, getattr(view, "lookup_field", "pk")))
    kwargs = {name: known.get(name, lookup) for name in route.kwargs}
    return reverse(route.name, kwargs=kwargs)


def call(client, method: str, url: str):
    """``method`` on ``url`` through a Django test client; bodies are an empty JSON object."""
    if method in {"get", "delete"}:
        return getattr(client, method)(url)
    return getattr(client, method)(url, data=json.dumps({}), content_type="application/json")
