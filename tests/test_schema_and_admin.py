"""OpenAPI schema, the docs page, and the operators' admin console."""

import pytest
import yaml

from tenants.models import ApiKey, Membership, Tenant, User
from tests.conftest import client_for
from tests.factories import make_tenant

pytestmark = pytest.mark.django_db


def test_openapi_schema_lists_the_api(client):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert schema["openapi"].startswith("3.")
    for path in [
        "/api/v1/tenant",
        "/api/v1/members",
        "/api/v1/members/{id}",
        "/api/v1/api-keys",
        "/api/v1/datasets",
        "/api/v1/datasets/{id}/preview",
        "/api/v1/datasets/uploads",
        "/api/v1/datasets/uploads/{id}/complete",
        "/api/v1/templates",
        "/api/v1/jobs",
        "/api/v1/jobs/{id}/cancel",
        "/api/v1/jobs/{id}/metrics",
        "/api/v1/jobs/{id}/logs",
        "/api/v1/models",
        "/api/v1/models/{name}/aliases/{alias}",
        "/api/v1/models/{name}/traffic",
        "/api/v1/models/{model_name}/versions/{version}",
        "/api/v1/models/{model_name}/versions/{version}/archive",
    ]:
        assert path in schema["paths"], path


def test_docs_page_uses_no_cdn(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "cdn.jsdelivr" not in html and "unpkg" not in html


@pytest.fixture
def operator(client):
    user = User.objects.create_superuser(email="ops@platform.test", password="ops-password-123")
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "page", ["tenants/tenant", "tenants/plan", "tenants/membership", "tenants/apikey", "tenants/user"]
)
def test_admin_pages_load(operator, page):
    make_tenant("Listed")
    assert operator.get(f"/admin/{page}/").status_code == 200
    assert operator.get(f"/admin/{page}/?q=listed").status_code == 200
    assert operator.get(f"/admin/{page}/add/").status_code == 200


@pytest.mark.parametrize(
    "page", ["training/dataset", "training/datasetupload", "training/trainingjob", "serving/modelversion"]
)
def test_dataset_admin_pages_load(operator, page):
    from tests.factories import make_dataset, make_upload

    made = make_tenant("Data")
    dataset = make_dataset(made.tenant)
    upload = make_upload(made.tenant)
    assert operator.get(f"/admin/{page}/").status_code == 200
    assert operator.get(f"/admin/{page}/?q=reviews").status_code == 200
    if page.endswith(("dataset", "datasetupload")):
        obj = dataset if page.endswith("dataset") else upload
        assert operator.get(f"/admin/{page}/{obj.pk}/change/").status_code == 200


def test_admin_creates_a_tenant(operator):
    from tenants.services import default_plan

    plan = default_plan()
    response = operator.post(
        "/admin/tenants/tenant/add/",
        {
            "name": "Admin Made",
            "slug": "admin-made",
            "status": "active",
            "plan": plan.pk,
            "tenants_membership_set-TOTAL_FORMS": "0",
            "tenants_membership_set-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Tenant.objects.filter(slug="admin-made").exists()


def test_admin_creates_an_api_key_and_shows_it_once(operator):
    tenant = make_tenant("KeyAdmin").tenant
    response = operator.post(
        "/admin/tenants/apikey/add/",
        {"tenant": tenant.pk, "name": "from admin", "scopes": ["read", "predict"], "role": "member"},
        follow=True,
    )
    assert response.status_code == 200
    key = ApiKey.objects.get(tenant=tenant, name="from admin")
    page = response.content.decode()
    raw = page.split("not shown again: ")[1].split("<")[0].strip()
    assert raw.startswith(f"mlp_{key.prefix}_")
    assert client_for(raw).get("/api/v1/tenant").status_code == 200


def test_admin_suspend_action_takes_effect_in_the_api(operator):
    made = make_tenant("Suspendable")
    response = operator.post("/admin/tenants/tenant/", {"action": "suspend", "_selected_action": [str(made.tenant.pk)]})
    assert response.status_code == 302
    assert client_for(made.raw_key).get("/api/v1/tenant").status_code == 403
    assert Membership.objects.filter(tenant=made.tenant).exists()
