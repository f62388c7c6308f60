"""The "try it" box: the dashboard sends the prediction to the real serving process as the signed-in member."""

from __future__ import annotations

import json
import time
from unittest import mock

import pytest
from django.test import override_settings
from django.urls import reverse

from serving import tokens
from tenants import services as tenant_services
from tenants.models import Membership, Role
from tests.support.dashboard import signed_in
from tests.support.factories import make_member
from tests.support.serving import call, publish_model, serving_server
from tests.support.workers import free_port

pytestmark = pytest.mark.django_db(transaction=True)
VISITOR = {"instances": ["12 85 3 9"]}


def try_it(client, name: str, body, version: str = ""):
    url = reverse("dashboard:model-try", args=[name]) + (f"?version={version}" if version else "")
    return client.post(url, json.dumps(body), content_type="application/json")


def test_try_it_answers_from_the_serving_process(tenant_a, tenant_b):
    publish_model(tenant_a.tenant, name="clicks")
    owner = signed_in(tenant_a.owner)
    viewer = signed_in(make_member(tenant_a.tenant, role=Role.VIEWER).user)
    with serving_server() as (base, _app), override_settings(SERVING_URL=base):
        answer = try_it(owner, "clicks", VISITOR)
        assert answer.status_code == 200, answer.content
        assert answer["X-Model-Version"] == "1"
        assert 0.0 <= answer.json()["predictions"][0]["probability"] <= 1.0
        assert try_it(owner, "clicks", VISITOR, version="1").status_code == 200
        assert try_it(owner, "clicks", VISITOR, version="7").status_code == 404  # serving's own answer
        assert try_it(owner, "clicks", VISITOR, version="x1").status_code == 400
        bad = try_it(owner, "clicks", {"instances": [{"no_such_input": 1}]})
        assert bad.status_code == 400 and "error" in bad.json()
        assert try_it(owner, "clicks", {"instances": ["1"] * 40_000}).status_code == 413
        assert try_it(viewer, "clicks", VISITOR).status_code == 403  # viewers have no predict scope
        assert try_it(signed_in(tenant_b.owner), "clicks", VISITOR).status_code == 404


def test_try_it_says_so_when_serving_is_down(tenant_a):
    publish_model(tenant_a.tenant, name="clicks")
    with override_settings(SERVING_URL=f"http://127.0.0.1:{free_port()}"):
        answer = try_it(signed_in(tenant_a.owner), "clicks", VISITOR)
    assert answer.status_code == 502 and answer.json()["error"]["code"] == "serving_unavailable"


def test_prediction_tokens_are_signed_short_lived_and_follow_membership(tenant_a, tenant_b):
    publish_model(tenant_a.tenant, name="clicks")
    member = make_member(tenant_a.tenant, role=Role.MEMBER)
    path = "/v1/models/clicks:predict"
    with serving_server(SERVING_ROUTE_TTL_SECONDS=0) as (base, _app):
        token = tokens.mint(tenant=tenant_a.tenant, user=member.user)
        assert call(base, "POST", path, VISITOR, token)[0] == 200
        forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        assert call(base, "POST", path, VISITOR, forged)[0] == 401
        # A token for tenant B's model names only tenant A: B's models are not found through it.
        publish_model(tenant_b.tenant, name="other")
        assert call(base, "POST", "/v1/models/other:predict", VISITOR, token)[0] == 404
        later = time.time() + tokens.TOKEN_SECONDS + 5
        with mock.patch("django.core.signing.time.time", return_value=later):
            assert tokens.grant_for_token(raw=token) is None
        Membership.objects.filter(pk=member.pk).delete()
        assert call(base, "POST", path, VISITOR, token)[0] == 401
        owner_token = tokens.mint(tenant=tenant_a.tenant, user=tenant_a.owner)
        tenant_services.set_tenant_status(tenant=tenant_a.tenant, status="suspended")
        assert call(base, "POST", path, VISITOR, owner_token)[0] == 403
