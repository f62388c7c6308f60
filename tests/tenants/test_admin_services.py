"""The admin console as a write path (issue 12): every change goes through the services, is audited with the
operator as actor, keeps the services' rules (a dataset in use, the last owner), and past bills keep their prices.

All through HTTP: the admin with Django's test client signed in as staff, the bills through the API.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from core import storage
from datasets.models import Dataset
from tenants import services
from tenants.models import ApiKey, AuditEvent, Membership, Plan, PlanPrice, Role, Tenant, User
from tests.conftest import client_for
from tests.support.factories import make_dataset, make_job, make_member, make_tenant, put_on_plan
from training.models import TrainingJob
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db

OPERATOR = "ops@platform.test"
ACTOR = f"operator:{OPERATOR}"
MEMBERSHIPS = "tenants_membership_set"


@pytest.fixture
def operator(client):
    client.force_login(User.objects.create_superuser(email=OPERATOR, password="ops-password-123"))
    return client


def events(tenant: Tenant, action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.for_tenant(tenant).filter(action=action).order_by("created_at"))


def page_text(response) -> str:
    return response.content.decode()


def _objects_under(prefix: str) -> list[str]:
    return list(storage.list_keys(prefix))


# --- datasets ---------------------------------------------------------------------------------------------


def test_admin_delete_of_a_dataset_removes_its_objects_and_is_audited(operator, django_capture_on_commit_callbacks):
    tenant = make_tenant("Data").tenant
    dataset = make_dataset(tenant)
    folder = f"tenants/{tenant.id}/datasets/{dataset.id}/"
    assert _objects_under(folder)
    with django_capture_on_commit_callbacks(execute=True):
        response = operator.post(f"/admin/datasets/dataset/{dataset.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Dataset.objects.filter(pk=dataset.pk).exists()
    assert _objects_under(folder) == []
    (event,) = events(tenant, "dataset.delete")
    assert event.actor_kind == "operator" and event.actor_label == ACTOR
    assert event.target_id == str(dataset.pk)


def test_admin_refuses_to_delete_a_dataset_a_job_uses_one_or_in_bulk(operator, django_capture_on_commit_callbacks):
    tenant = make_tenant("Busy").tenant
    job = make_job(tenant)  # queued, reading its dataset
    used = Dataset.objects.get(pk=job.dataset_id)
    spare = make_dataset(tenant, name="spare")
    with django_capture_on_commit_callbacks(execute=True):
        response = operator.post(f"/admin/datasets/dataset/{used.pk}/delete/", {"post": "yes"}, follow=True)
    assert response.status_code == 200
    assert "Nothing was changed" in page_text(response) and "job uses this dataset" in page_text(response)
    assert Dataset.objects.filter(pk=used.pk).exists()
    assert _objects_under(f"tenants/{tenant.id}/datasets/{used.id}/")
    # "Delete selected": one refusal keeps every selected row (and every object).
    with django_capture_on_commit_callbacks(execute=True):
        response = operator.post(
            "/admin/datasets/dataset/",
            {"action": "delete_selected", "post": "yes", "_selected_action": [str(used.pk), str(spare.pk)]},
            follow=True,
        )
    assert response.status_code == 200 and "Nothing was changed" in page_text(response)
    assert Dataset.objects.filter(pk__in=[used.pk, spare.pk]).count() == 2
    assert _objects_under(f"tenants/{tenant.id}/datasets/{spare.id}/")
    assert events(tenant, "dataset.delete") == []
    # Once the job has ended, the bulk delete goes through the service for each row.
    TrainingJob.objects.filter(pk=job.pk).update(status="cancelled", finished_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        operator.post(
            "/admin/datasets/dataset/",
            {"action": "delete_selected", "post": "yes", "_selected_action": [str(used.pk), str(spare.pk)]},
        )
    assert not Dataset.objects.filter(pk__in=[used.pk, spare.pk]).exists()
    assert _objects_under(f"tenants/{tenant.id}/datasets/") == []
    assert {e.actor_label for e in events(tenant, "dataset.delete")} == {ACTOR} and len(
        events(tenant, "dataset.delete")
    ) == 2


# --- jobs -------------------------------------------------------------------------------------------------


def test_admin_job_delete_goes_through_the_service(operator, django_capture_on_commit_callbacks):
    tenant = make_tenant("Jobs").tenant
    job = make_job(tenant)
    checkpoint = f"tenants/{tenant.id}/jobs/{job.id}/checkpoints/latest.json"
    storage.put_bytes(checkpoint, b'{"epoch": 1}')

    def delete():
        with django_capture_on_commit_callbacks(execute=True):
            return operator.post(f"/admin/training/trainingjob/{job.pk}/delete/", {"post": "yes"}, follow=True)

    assert "cancel it first" in page_text(delete())  # queued
    # Ended this month with compute time: it still counts toward this month's quota and bill.
    TrainingJob.objects.filter(pk=job.pk).update(status="failed", compute_seconds=120.0, finished_at=timezone.now())
    assert "counts toward this month" in page_text(delete())
    assert TrainingJob.objects.filter(pk=job.pk).exists() and storage.head(checkpoint) is not None
    assert events(tenant, "job.delete") == []
    last_month = timezone.now().replace(day=1) - timedelta(days=3)
    TrainingJob.objects.filter(pk=job.pk).update(finished_at=last_month)
    assert delete().status_code == 200
    assert not TrainingJob.objects.filter(pk=job.pk).exists()
    assert storage.head(checkpoint) is None
    (event,) = events(tenant, "job.delete")
    assert event.actor_label == ACTOR and event.details["compute_seconds"] == 120.0


# --- tenants and members ------------------------------------------------------------------------------------


def tenant_form(tenant: Tenant, *, rows: list[dict] | None = None, new: list[dict] | None = None, **fields) -> dict:
    """The tenant change form as the admin posts it, with its membership rows (existing, then new)."""
    rows = rows if rows is not None else [{"membership": m} for m in Membership.objects.filter(tenant=tenant)]
    new = new or []
    data = {
        "name": tenant.name,
        "slug": tenant.slug,  # read-only now; the old form required it
        "status": tenant.status,
        "plan": tenant.plan_id,
        f"{MEMBERSHIPS}-TOTAL_FORMS": str(len(rows) + len(new)),
        f"{MEMBERSHIPS}-INITIAL_FORMS": str(len(rows)),
    }
    data.update(fields)
    for i, row in enumerate(rows):
        membership = row["membership"]
        data |= {
            f"{MEMBERSHIPS}-{i}-id": str(membership.pk),
            f"{MEMBERSHIPS}-{i}-tenant": str(tenant.pk),
            f"{MEMBERSHIPS}-{i}-user": str(row.get("user", membership.user_id)),
            f"{MEMBERSHIPS}-{i}-role": row.get("role", membership.role),
        }
        if row.get("delete"):
            data[f"{MEMBERSHIPS}-{i}-DELETE"] = "on"
    for j, row in enumerate(new, start=len(rows)):
        data |= {
            f"{MEMBERSHIPS}-{j}-tenant": str(tenant.pk),
            f"{MEMBERSHIPS}-{j}-user": str(row["user"].pk),
            f"{MEMBERSHIPS}-{j}-role": row["role"],
        }
    return data


def change_tenant(operator, tenant: Tenant, data: dict):
    return operator.post(f"/admin/tenants/tenant/{tenant.pk}/change/", data, follow=True)


def test_admin_keeps_a_started_private_job_and_says_why_a_retry_is_refused(operator):
    """Deleting a private job that started would give its epsilon back to the dataset's budget; retrying a
    private job that never started spends its share again, so it is held to the budget (issue 17's review)."""
    from tests.support.jobs import ready_dataset, sample_csv, submit_job
    from training import privacy as dp
    from training import services as job_services

    owner = make_tenant("Private")
    api = client_for(owner.raw_key)
    dataset_id = ready_dataset(api, sample_csv("ctr", 400), label="clicked")
    one = dp.epsilon(sample_rate=64 / 320, noise_multiplier=1.0, steps=5, delta=1e-5)
    budget = {"epsilon": one * 1.01, "delta": 1e-5}
    assert api.put(f"/api/v1/datasets/{dataset_id}/privacy", budget, format="json").status_code == 200
    never = submit_job(api, dataset_id, privacy={"noise_multiplier": 1.0}).json()["id"]
    api.post(f"/api/v1/jobs/{never}/cancel")  # never started: its share is back
    started = job_services.claim_job(
        job_id=submit_job(api, dataset_id, privacy={"noise_multiplier": 1.0}).json()["id"], worker="test-host:1"
    )
    job_services.finish_job(job=started, status="succeeded", compute_seconds=0.0, device="cpu")

    page = operator.post(f"/admin/training/trainingjob/{started.pk}/delete/", {"post": "yes"}, follow=True)
    assert "counts toward its dataset&#x27;s privacy budget" in page_text(page)
    assert TrainingJob.objects.filter(pk=started.pk).exists() and events(owner.tenant, "job.delete") == []

    page = operator.post(
        "/admin/training/trainingjob/",
        {"action": "retry", "_selected_action": [never]},
        follow=True,
    )
    assert "Requeued 0 job(s)." in page_text(page)
    assert f"Job {never} was not requeued: privacy_budget_exceeded" in page_text(page)
    assert TrainingJob.objects.get(pk=never).status == "cancelled" and events(owner.tenant, "job.retry") == []


def test_admin_tenant_status_plan_and_name_changes_are_audited(operator):
    made = make_tenant("Edited")
    tenant = made.tenant
    old_name = tenant.name
    bigger = Plan.objects.create(slug="bigger", name="Bigger", max_concurrent_jobs=9)
    response = change_tenant(
        operator, tenant, tenant_form(tenant, status="suspended", plan=bigger.pk, name="Edited Renamed")
    )
    assert response.status_code == 200 and "Nothing was changed" not in page_text(response)
    tenant.refresh_from_db()
    assert (tenant.status, tenant.plan_id, tenant.name) == ("suspended", bigger.pk, "Edited Renamed")
    for action, details in (
        ("tenant.status", {"status": "suspended", "previous": "active"}),
        ("tenant.plan", {"plan": "bigger", "previous": "starter"}),
        ("tenant.rename", {"name": "Edited Renamed", "previous": old_name}),
    ):
        (event,) = events(tenant, action)
        assert event.actor_kind == "operator" and event.actor_label == ACTOR
        assert {k: event.details[k] for k in details} == details
    assert client_for(made.raw_key).get("/api/v1/tenant").status_code == 403  # the suspension took effect
    # The slug (in keys' tenant hints, serving pins and URLs) is not editable once made.
    change_tenant(operator, tenant, tenant_form(tenant, slug="hijacked"))
    tenant.refresh_from_db()
    assert tenant.slug != "hijacked"
    # No delete: suspend instead.
    assert operator.get(f"/admin/tenants/tenant/{tenant.pk}/delete/").status_code == 403


def test_admin_cannot_demote_or_remove_the_last_owner(operator):
    made = make_tenant("Owned")
    tenant = made.tenant
    owner = Membership.objects.get(tenant=tenant, role=Role.OWNER)
    before = AuditEvent.objects.for_tenant(tenant).count()
    for row in ({"membership": owner, "role": "member"}, {"membership": owner, "delete": True}):
        response = change_tenant(operator, tenant, tenant_form(tenant, rows=[row], status="suspended"))
        assert "Nothing was changed" in page_text(response) and "at least one owner" in page_text(response)
        owner.refresh_from_db()
        tenant.refresh_from_db()
        assert owner.role == Role.OWNER and tenant.status == "active"  # the whole save was rolled back
    # The memberships page and deleting the person: the same rule.
    response = operator.post(f"/admin/tenants/membership/{owner.pk}/delete/", {"post": "yes"}, follow=True)
    assert "at least one owner" in page_text(response)
    response = operator.post(f"/admin/tenants/membership/{owner.pk}/change/", {"role": "viewer"}, follow=True)
    assert "at least one owner" in page_text(response)
    response = operator.post(f"/admin/tenants/user/{made.owner.pk}/delete/", {"post": "yes"}, follow=True)
    assert "at least one owner" in page_text(response)
    assert User.objects.filter(pk=made.owner.pk).exists()
    owner.refresh_from_db()
    assert owner.role == Role.OWNER
    assert AuditEvent.objects.for_tenant(tenant).count() == before


def test_admin_membership_edits_go_through_the_services_and_are_audited(operator):
    made = make_tenant("Team")
    tenant = made.tenant
    owner = Membership.objects.get(tenant=tenant, role=Role.OWNER)
    member = make_member(tenant, role=Role.MEMBER)
    newcomer = User.objects.create_user(email="newcomer@example.com")
    # One save: a new owner joins, the old owner steps down to admin, the member leaves.
    data = tenant_form(
        tenant,
        rows=[{"membership": owner, "role": "admin"}, {"membership": member, "delete": True}],
        new=[{"user": newcomer, "role": "owner"}],
    )
    response = change_tenant(operator, tenant, data)
    assert "Nothing was changed" not in page_text(response)
    roles = dict(Membership.objects.filter(tenant=tenant).values_list("user__email", "role"))
    assert roles == {made.owner.email: "admin", "newcomer@example.com": "owner"}
    by_operator = AuditEvent.objects.for_tenant(tenant).filter(actor_label=ACTOR)
    assert sorted(by_operator.values_list("action", flat=True)) == ["member.add", "member.remove", "member.role"]
    # A row cannot be moved to another person (that would skip the remove and the add).
    admin_row = Membership.objects.get(tenant=tenant, user=made.owner)
    response = change_tenant(
        operator, tenant, tenant_form(tenant, rows=[{"membership": admin_row, "user": member.user_id}])
    )
    assert "Nothing was changed" in page_text(response)
    assert Membership.objects.get(pk=admin_row.pk).user_id == made.owner.pk
    # The memberships page: add (audited), role change (audited), delete (audited).
    other = make_tenant("Elsewhere").tenant
    response = operator.post(
        "/admin/tenants/membership/add/", {"tenant": other.pk, "user": newcomer.pk, "role": "viewer"}, follow=True
    )
    assert response.status_code == 200
    added = Membership.objects.get(tenant=other, user=newcomer)
    operator.post(f"/admin/tenants/membership/{added.pk}/change/", {"role": "member"})
    assert Membership.objects.get(pk=added.pk).role == "member"
    operator.post(f"/admin/tenants/membership/{added.pk}/delete/", {"post": "yes"})
    assert not Membership.objects.filter(pk=added.pk).exists()
    assert [
        e.action for e in AuditEvent.objects.for_tenant(other).filter(actor_label=ACTOR).order_by("created_at")
    ] == [
        "member.add",
        "member.role",
        "member.remove",
    ]


def test_admin_api_keys_are_revoked_never_edited_or_deleted(operator):
    made = make_tenant("Keys")
    key = made.api_key
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    far = (timezone.now() + timedelta(days=3650)).strftime("%Y-%m-%d")
    operator.post(
        f"/admin/tenants/apikey/{key.pk}/change/",
        {"name": "renamed", "expires_at_0": far, "expires_at_1": "00:00:00", "revoked_at_0": "", "revoked_at_1": ""},
    )
    key.refresh_from_db()
    assert key.revoked_at is not None and key.name != "renamed" and key.expires_at is None
    assert operator.get(f"/admin/tenants/apikey/{key.pk}/delete/").status_code == 403
    assert client_for(made.raw_key).get("/api/v1/tenant").status_code == 401


# --- plans and prices ---------------------------------------------------------------------------------------


def plan_form(plan: Plan, **changes) -> dict:
    fields = [*services.PLAN_FIELDS, *services.PRICE_FIELDS]
    data = {name: str(getattr(plan, name)) for name in fields}
    data |= {"price_history-TOTAL_FORMS": "0", "price_history-INITIAL_FORMS": "0", "prices_effective_from": ""}
    data |= {name: str(value) for name, value in changes.items()}
    return data


def _month_after(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def test_a_past_months_bill_keeps_its_prices_after_a_price_change(operator):
    today = timezone.now().date()
    made = make_tenant("Billed")
    plan = Plan.objects.create(slug="metered", name="Metered", monthly_base_fee=Decimal("10.00"))
    put_on_plan(made.tenant, plan)
    other = make_tenant("Also on it")
    put_on_plan(other.tenant, plan)
    past = (today.replace(day=1) - timedelta(days=1)).replace(day=1)  # last month
    UsageRecord.objects.create(tenant=made.tenant, day=past + timedelta(days=4), kind="gpu_seconds", quantity=7200)
    api = client_for(made.raw_key)
    before = api.get(f"/api/v1/billing/estimate?month={past:%Y-%m}").json()
    assert before["total"] == "15.00"  # 10.00 + 2 GPU-h x 2.50

    response = operator.post(
        f"/admin/tenants/plan/{plan.pk}/change/",
        plan_form(plan, price_gpu_hour="4.0000", monthly_base_fee="20.00"),
        follow=True,
    )
    assert response.status_code == 200 and "Nothing was changed" not in page_text(response)
    after = api.get(f"/api/v1/billing/estimate?month={past:%Y-%m}").json()
    assert after["total"] == "15.00"
    plan.refresh_from_db()
    assert plan.price_gpu_hour == Decimal("4.0000")
    history = list(
        PlanPrice.objects.filter(plan=plan).order_by("effective_from").values_list("effective_from", "price_gpu_hour")
    )
    assert history == [(date(1970, 1, 1), Decimal("2.5000")), (today, Decimal("4.0000"))]
    amounts = [(i["kind"], i["quantity"], i["unit_price"], i["amount"]) for i in after["line_items"]]
    assert amounts == [(i["kind"], i["quantity"], i["unit_price"], i["amount"]) for i in before["line_items"]]
    assert [p["price_gpu_hour"] for p in after["prices"]] == ["2.5000"]
    # Today's usage is charged at today's price.
    UsageRecord.objects.create(tenant=made.tenant, day=today, kind="gpu_seconds", quantity=3600)
    now = api.get(f"/api/v1/billing/estimate?month={today:%Y-%m}").json()
    gpu = next(item for item in now["line_items"] if item["kind"] == "gpu")
    assert gpu["amount"] == "4.00" and gpu["prices"][-1]["unit_price"] == "4.0000"
    # The plan change is in the audit log of every tenant on the plan, with the operator as actor.
    for tenant in (made.tenant, other.tenant):
        (event,) = events(tenant, "plan.prices")
        assert event.actor_label == ACTOR and event.target_id == str(plan.pk)
        assert event.details["prices"]["price_gpu_hour"] == "4.0000"
        assert event.details["previous"]["price_gpu_hour"] == "2.5000"
    # The admin's usage page shows the prices each bill used.
    page = operator.get(f"/admin/usage/?month={past:%Y-%m}")
    assert "GPU-h 2.5000" in page_text(page) and "GPU-h 4.0000" not in page_text(page)


def test_a_price_change_mid_month_splits_the_line_and_keeps_the_opening_base_fee(operator):
    made = make_tenant("Split")
    plan = Plan.objects.create(slug="split", name="Split", monthly_base_fee=Decimal("10.00"))
    put_on_plan(made.tenant, plan)
    month = _month_after(timezone.now().date())
    change_day = month + timedelta(days=14)
    response = operator.post(
        f"/admin/tenants/plan/{plan.pk}/change/",
        plan_form(plan, price_cpu_hour="0.2000", monthly_base_fee="99.00", prices_effective_from=change_day),
        follow=True,
    )
    assert "in force from" in page_text(response)
    plan.refresh_from_db()
    assert plan.price_cpu_hour == Decimal("0.0800")  # not yet in force
    UsageRecord.objects.create(tenant=made.tenant, day=month + timedelta(days=2), kind="cpu_seconds", quantity=36000)
    UsageRecord.objects.create(tenant=made.tenant, day=change_day, kind="cpu_seconds", quantity=36000)
    bill = client_for(made.raw_key).get(f"/api/v1/billing/estimate?month={month:%Y-%m}").json()
    items = {item["kind"]: item for item in bill["line_items"]}
    assert items["base_fee"]["amount"] == "10.00"  # the fee in force on the month's first day
    cpu = items["cpu"]
    assert [(p["effective_from"], p["quantity"], p["unit_price"], p["amount"]) for p in cpu["prices"]] == [
        ("1970-01-01", "10.000000", "0.0800", "0.80"),
        (change_day.isoformat(), "10.000000", "0.2000", "2.00"),
    ]
    assert cpu["amount"] == "2.80" and bill["total"] == "12.80"
    assert [p["effective_from"] for p in bill["prices"]] == ["1970-01-01", change_day.isoformat()]
    # A change dated in the past is refused (past days keep their prices).
    yesterday = timezone.now().date() - timedelta(days=1)
    response = operator.post(
        f"/admin/tenants/plan/{plan.pk}/change/",
        plan_form(plan, price_cpu_hour="0.0100", prices_effective_from=yesterday),
        follow=True,
    )
    assert "Nothing was changed" in page_text(response)
    assert not PlanPrice.objects.filter(plan=plan, price_cpu_hour=Decimal("0.0100")).exists()


def test_admin_plan_limit_edits_are_audited_per_tenant(operator):
    made = make_tenant("Limited")
    plan = Plan.objects.create(slug="limited", name="Limited")
    put_on_plan(made.tenant, plan)
    operator.post(f"/admin/tenants/plan/{plan.pk}/change/", plan_form(plan, max_concurrent_jobs=7))
    plan.refresh_from_db()
    assert plan.max_concurrent_jobs == 7
    (event,) = events(made.tenant, "plan.update")
    assert event.actor_label == ACTOR
    assert event.details["changes"] == {"max_concurrent_jobs": {"from": "2", "to": "7"}}
    assert not PlanPrice.objects.filter(plan=plan).exclude(effective_from=date(1970, 1, 1)).exists()
    assert operator.get(f"/admin/tenants/plan/{plan.pk}/delete/").status_code == 403


def test_admin_deactivating_a_person_stops_their_keys_and_is_audited_in_each_tenant(operator):
    made = make_tenant("Deactivated")
    other = make_tenant("Second home").tenant
    member = make_member(other, role=Role.ADMIN, email=made.owner.email)
    assert client_for(made.raw_key).get("/api/v1/tenant").status_code == 200
    user = made.owner
    joined = timezone.localtime(user.date_joined)
    form = {
        "email": user.email,
        "first_name": "",
        "last_name": "",
        "is_staff": "",
        "is_superuser": "",
        "date_joined_0": joined.strftime("%Y-%m-%d"),
        "date_joined_1": joined.strftime("%H:%M:%S"),
        # is_active left out: unticked
    }
    response = operator.post(f"/admin/tenants/user/{user.pk}/change/", form, follow=True)
    assert response.status_code == 200 and "Nothing was changed" not in page_text(response)

    assert User.objects.get(pk=user.pk).is_active is False
    assert client_for(made.raw_key).get("/api/v1/tenant").status_code == 401  # the founder's key follows them
    for tenant in (made.tenant, member.tenant):
        [row] = events(tenant, "user.deactivate")
        assert row.actor_label == ACTOR and row.details["email"] == user.email


def test_a_past_months_bill_keeps_the_plan_the_tenant_had_then(operator):
    """Moving a tenant to another plan bills its usage on the new plan from that day only."""
    today = timezone.now().date()
    made = make_tenant("Mover")
    cheap = Plan.objects.create(slug="cheap", name="Cheap", price_gpu_hour=Decimal("1.0000"))
    dear = Plan.objects.create(slug="dear", name="Dear", price_gpu_hour=Decimal("9.0000"))
    put_on_plan(made.tenant, cheap)
    past = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    UsageRecord.objects.create(tenant=made.tenant, day=past, kind="gpu_seconds", quantity=3600)
    api = client_for(made.raw_key)
    before = api.get(f"/api/v1/billing/estimate?month={past:%Y-%m}").json()

    data = tenant_form(made.tenant, plan=dear.pk)
    assert "Nothing was changed" not in page_text(change_tenant(operator, made.tenant, data))
    made.tenant.refresh_from_db()
    assert made.tenant.plan == dear

    after = api.get(f"/api/v1/billing/estimate?month={past:%Y-%m}").json()
    assert after == before and after["plan"] == "cheap" and after["total"] == "1.00"
    UsageRecord.objects.create(tenant=made.tenant, day=today, kind="gpu_seconds", quantity=3600)
    now = api.get(f"/api/v1/billing/estimate?month={today:%Y-%m}").json()
    gpu = next(item for item in now["line_items"] if item["kind"] == "gpu")
    assert now["plan"] == "dear" and gpu["prices"][-1]["unit_price"] == "9.0000"
    assert [p["plan"] for p in now["prices"]][-1] == "dear"
