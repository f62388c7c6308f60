"""OpenAPI schema, the docs page, and the operators' admin console."""

import pytest
import yaml

from tenants.models import ApiKey, Membership, Tenant, User
from tests.conftest import client_for
from tests.support.factories import make_tenant

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
    "page", ["datasets/dataset", "datasets/datasetupload", "training/trainingjob", "serving/modelversion"]
)
def test_dataset_admin_pages_load(operator, page):
    from tests.support.factories import make_dataset, make_upload

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


def test_admin_suspend_action_takes_effect_in_the_dashboard_at_once(operator):
    from tests.support.dashboard import signed_in

    made = make_tenant("Dashboarded")
    owner = signed_in(made.owner)
    assert owner.get("/").status_code == 200
    operator.post("/admin/tenants/tenant/", {"action": "suspend", "_selected_action": [str(made.tenant.pk)]})
    assert owner.get("/").status_code == 403
    operator.post("/admin/tenants/tenant/", {"action": "reactivate", "_selected_action": [str(made.tenant.pk)]})
    assert owner.get("/").status_code == 200


def test_admin_front_page_links_the_operators_pages(operator):
    page = operator.get("/admin/").content.decode()
    assert 'href="/admin/status/"' in page and 'href="/admin/usage/"' in page


def test_jobs_filter_by_date_and_show_the_traceback(operator):
    from tests.support.factories import make_job
    from training.models import TrainingJob

    job = make_job(make_tenant("Failing").tenant)
    TrainingJob.objects.filter(pk=job.pk).update(status="failed", error_traceback="Traceback (most recent call last)")
    year = job.created_at.year
    listed = operator.get(f"/admin/training/trainingjob/?created_at__year={year}&status=failed&template=sequence_ctr")
    assert listed.status_code == 200 and str(job.pk).encode() in listed.content
    assert b"Traceback (most recent call last)" in operator.get(f"/admin/training/trainingjob/{job.pk}/change/").content


def test_monthly_usage_per_tenant_with_cost(operator, client):
    from datetime import date
    from decimal import Decimal

    from usage import selectors
    from usage.models import UsageRecord

    a, b = make_tenant("Billed"), make_tenant("Quiet")
    UsageRecord.objects.create(tenant=a.tenant, day=date(2026, 11, 3), kind="cpu_seconds", quantity=Decimal(7200))
    UsageRecord.objects.create(tenant=a.tenant, day=date(2026, 11, 4), kind="predictions", quantity=Decimal(20_000))
    UsageRecord.objects.create(tenant=a.tenant, day=date(2026, 10, 30), kind="predictions", quantity=Decimal(10**6))
    bills = {row["tenant"].pk: row for row in selectors.every_tenants_bill(month=date(2026, 11, 1))}
    for made in (a, b):  # the operators' figures are the tenant's own estimate, to the cent
        own = selectors.billing_estimate(tenant=made.tenant, month=date(2026, 11, 1))
        assert {k: v for k, v in bills[made.tenant.pk].items() if k != "tenant"} == own
    assert Decimal(bills[a.tenant.pk]["total"]) == Decimal("0.16") + Decimal("1.00")  # 2 CPU-h x 0.08 + 20 x 0.05
    page = operator.get("/admin/usage/?month=2026-11")
    assert page.status_code == 200 and a.tenant.slug.encode() in page.content and b.tenant.slug.encode() in page.content
    csv_rows = operator.get("/admin/usage/?month=2026-11&format=csv").content.decode().splitlines()
    row = next(line for line in csv_rows if line.startswith(a.tenant.slug + ","))
    assert row.endswith(",1.16") and len(csv_rows) >= 3
    assert operator.get("/admin/usage/?month=garbage").status_code == 200
    client.logout()
    assert client.get("/admin/usage/").status_code == 302  # staff only


def test_demo_logins_give_a_dashboard_owner_and_an_operator(client):
    import json
    from io import StringIO

    from django.core.management import call_command

    made = make_tenant("Demo")
    out = StringIO()
    call_command("demo_logins", "--owner-email", made.owner.email, "--json", stdout=out)
    logins = json.loads(out.getvalue())
    assert client.login(username=made.owner.email, password=logins["password"])
    assert client.get("/").status_code == 200
    assert client.login(username=logins["operator"], password=logins["password"])
    assert client.get("/admin/").status_code == 200
