"""The model registry: versions with lineage, aliases (promote, roll back), traffic split, archive and delete."""

from __future__ import annotations

import pytest

from serving.models import ModelVersion, RegistryEvent
from tenants.models import Role
from tests.conftest import client_for
from tests.support.factories import make_key, make_model_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def versions(tenant_a):
    v1 = make_model_version(tenant_a.tenant, name="ctr", version=1)
    v2 = make_model_version(tenant_a.tenant, name="ctr", version=2)
    return v1, v2


def test_list_and_read_versions(api_a, versions):
    models = api_a.get("/api/v1/models").json()
    assert [m["name"] for m in models["results"]] == ["ctr"]
    assert models["results"][0]["latest_version"] == 2
    listed = api_a.get("/api/v1/models/ctr/versions").json()
    assert [v["version"] for v in listed["results"]] == [2, 1]
    detail = api_a.get("/api/v1/models/ctr/versions/1").json()
    assert detail["metrics"] == {"auc": 0.9} and "lineage" in detail and "manifest" in detail
    assert api_a.get("/api/v1/models/nope/versions").status_code == 404
    assert api_a.get("/api/v1/models/ctr/versions/9").status_code == 404


def test_versions_being_published_are_invisible(api_a, tenant_a, versions):
    ModelVersion.objects.filter(pk=versions[1].pk).update(status="publishing")
    assert [v["version"] for v in api_a.get("/api/v1/models/ctr/versions").json()["results"]] == [1]
    assert api_a.get("/api/v1/models/ctr/versions/2").status_code == 404
    assert api_a.put("/api/v1/models/ctr/aliases/production", {"version": 2}, format="json").status_code == 404


def test_promote_and_roll_back_are_alias_moves(api_a, versions):
    response = api_a.put("/api/v1/models/ctr/aliases/production", {"version": 2}, format="json")
    assert response.status_code == 200
    assert response.json()["aliases"] == {"production": 2}
    api_a.put("/api/v1/models/ctr/aliases/production", {"version": 1}, format="json")
    assert api_a.get("/api/v1/models/ctr").json()["aliases"] == {"production": 1}
    events = list(RegistryEvent.objects.filter(model__name="ctr").order_by("created_at").values("action", "details"))
    assert [e["details"]["previous"] for e in events] == [None, 2]
    assert api_a.delete("/api/v1/models/ctr/aliases/production").status_code == 204
    assert api_a.delete("/api/v1/models/ctr/aliases/production").status_code == 404


def test_referenced_versions_cannot_be_archived_or_deleted(api_a, versions):
    api_a.put("/api/v1/models/ctr/aliases/staging", {"version": 1}, format="json")
    for call in (
        lambda: api_a.post("/api/v1/models/ctr/versions/1/archive"),
        lambda: api_a.delete("/api/v1/models/ctr/versions/1"),
    ):
        response = call()
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "version_in_use"
    assert api_a.post("/api/v1/models/ctr/versions/2/archive").json()["status"] == "archived"
    response = api_a.put("/api/v1/models/ctr/aliases/production", {"version": 2}, format="json")
    assert response.status_code == 409  # an archived version cannot be promoted


def test_delete_version(api_a, versions, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        assert api_a.delete("/api/v1/models/ctr/versions/2").status_code == 204
    assert not ModelVersion.objects.filter(pk=versions[1].pk).exists()


@pytest.mark.parametrize(
    "weights, status, code",
    [
        ({"1": 90, "2": 10}, 200, None),
        ({"1": 50, "2": 40}, 400, "invalid_traffic"),
        ({"1": 100, "7": 0}, 404, "not_found"),
        ({"x": 100}, 400, "invalid_traffic"),
        ({"1": -1, "2": 101}, 400, "validation_error"),
        ({}, 200, None),
    ],
)
def test_traffic_split(api_a, versions, weights, status, code):
    response = api_a.put("/api/v1/models/ctr/traffic", {"weights": weights}, format="json")
    assert response.status_code == status, response.json()
    if code:
        assert response.json()["error"]["code"] == code
    else:
        assert response.json()["traffic"] == {k: v for k, v in weights.items() if v}


def test_traffic_targets_cannot_be_archived(api_a, versions):
    api_a.put("/api/v1/models/ctr/traffic", {"weights": {"1": 50, "2": 50}}, format="json")
    assert api_a.post("/api/v1/models/ctr/versions/2/archive").status_code == 409


def test_viewers_and_read_keys_cannot_move_aliases(tenant_a, versions):
    for key in (make_key(tenant_a.tenant, scopes=["read"]), make_key(tenant_a.tenant, role=Role.VIEWER)):
        response = client_for(key.raw_key).put("/api/v1/models/ctr/aliases/production", {"version": 1}, format="json")
        assert response.status_code == 403


@pytest.mark.parametrize("alias", ["Prod", "a" * 64, "bad alias", "-x"])
def test_bad_alias_names_are_404(api_a, versions, alias):
    assert api_a.put(f"/api/v1/models/ctr/aliases/{alias}", {"version": 1}, format="json").status_code == 404


def test_version_numbers_are_never_reused(tenant_a, django_capture_on_commit_callbacks):
    from serving import publishing, services
    from tests.support.factories import make_job

    job = make_job(tenant_a.tenant)
    first = publishing.reserve_version(job=job)
    ModelVersion.objects.filter(pk=first.pk).update(status="ready")
    with django_capture_on_commit_callbacks(execute=True):
        services.delete_version(tenant=tenant_a.tenant, model_name="ctr", version=first.version)
    second_job = make_job(tenant_a.tenant)
    assert publishing.reserve_version(job=second_job).version == first.version + 1


def test_version_numbers_past_the_column_are_4xx_not_500(api_a, versions):
    response = api_a.put("/api/v1/models/ctr/aliases/production", {"version": 10**20}, format="json")
    assert response.status_code == 400
    response = api_a.put("/api/v1/models/ctr/traffic", {"weights": {"9" * 30: 100}}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_traffic"
