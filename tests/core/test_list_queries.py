"""Every list (API endpoints and dashboard pages) reads a page in a constant number of SQL queries.

Each list is read once with one object of every kind and once with six,
after a warm-up request; the query counts must be equal, so no list does a
query per row (the load bench, ``bench/load.py --parts api``, prints the
same counts and the latency on a tenant with 10,000 jobs).
"""

from __future__ import annotations

import contextlib

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.conftest import client_for
from tests.support.dashboard import HTML_PAGES, signed_in
from tests.support.factories import OBJECT_FACTORIES
from tests.support.isolation import LIST_ROUTES

pytestmark = pytest.mark.django_db
DASHBOARD_LISTS = [p for p in HTML_PAGES if not p.pattern.regex.groupindex]


def queries(client, url: str) -> int:
    client.get(url)  # warm-up: once-a-minute bookkeeping (a key's last use) is not a per-row cost
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured.captured_queries)


def add_rows(tenant, times: int) -> None:
    for _ in range(times):
        for factory in OBJECT_FACTORIES.values():
            with contextlib.suppress(IntegrityError), transaction.atomic():  # one usage row per day and kind
                factory(tenant)


@pytest.mark.parametrize("route", LIST_ROUTES, ids=str)
def test_api_lists_take_a_constant_number_of_queries(route, tenant_a):
    api = client_for(tenant_a.raw_key)
    url = reverse(route.name)
    add_rows(tenant_a.tenant, 1)
    few = queries(api, url)
    add_rows(tenant_a.tenant, 5)
    assert queries(api, url) == few, url


@pytest.mark.parametrize("pattern", DASHBOARD_LISTS, ids=lambda p: p.name)
def test_dashboard_lists_take_a_constant_number_of_queries(pattern, tenant_a):
    owner = signed_in(tenant_a.owner)
    url = reverse(f"dashboard:{pattern.name}")
    add_rows(tenant_a.tenant, 1)
    few = queries(owner, url)
    add_rows(tenant_a.tenant, 5)
    assert queries(owner, url) == few, url
