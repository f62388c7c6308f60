"""Usage roll-up, billing arithmetic (exact, Decimal) and the usage, billing and quota endpoints."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from serving.models import PredictionUsage
from tenants.models import Plan
from tests.support.dashboard import signed_in
from tests.support.factories import make_job, make_model_version
from training.models import TrainingJob
from usage import billing, services
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db


def priced_plan() -> Plan:
    return Plan.objects.create(
        slug="priced",
        name="Priced",
        monthly_base_fee=Decimal("49.00"),
        price_gpu_hour=Decimal("2.5000"),
        price_cpu_hour=Decimal("0.0800"),
        price_gb_month=Decimal("0.0230"),
        price_per_1k_predictions=Decimal("0.0500"),
        price_per_1k_explanations=Decimal("2.5000"),
    )


def test_line_items_are_exact():
    plan = priced_plan()
    totals = {
        "gpu_seconds": Decimal(5400),  # 1.5 h x 2.50 = 3.75
        "cpu_seconds": Decimal(3600 * 10),  # 10 h x 0.08 = 0.80
        "storage_byte_days": Decimal(30 * 10**9 * 100),  # 100 GB for all 30 days = 100 GB-months x 0.023 = 2.30
        "predictions": Decimal(123_456),  # 123.456 x 0.05 = 6.1728 -> 6.17
        "explanations": Decimal(1_234),  # 1.234 x 2.50 = 3.085 -> 3.09 (priced apart from predictions)
    }
    items = billing.line_items(plan=plan, month=date(2026, 11, 1), totals=totals)
    amounts = {item.kind: item.amount for item in items}
    assert amounts == {
        "base_fee": Decimal("49.00"),
        "gpu": Decimal("3.75"),
        "cpu": Decimal("0.80"),
        "storage": Decimal("2.30"),
        "predictions": Decimal("6.17"),
        "explanations": Decimal("3.09"),
    }
    assert billing.total(items) == Decimal("65.11")
    assert {i.kind: i.unit for i in items}["explanations"] == "1,000 explanations"
    # Half a cent rounds up, never down by float error.
    half = billing.line_items(plan=plan, month=date(2026, 11, 1), totals={"predictions": Decimal(100)})
    assert {i.kind: i.amount for i in half}["predictions"] == Decimal("0.01")  # 0.1 x 0.05 = 0.005


def _finished(tenant, *, device: str, seconds: float, when: datetime) -> None:
    job = make_job(tenant)
    TrainingJob.objects.filter(pk=job.pk).update(
        status="succeeded", device=device, compute_seconds=seconds, finished_at=when
    )


def test_daily_roll_up_counts_compute_storage_and_predictions_and_is_idempotent(tenant_a, tenant_b):
    tenant = tenant_a.tenant
    today = timezone.now().date()
    noon = datetime.combine(today, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)
    _finished(tenant, device="gpu", seconds=1800.5, when=noon)
    _finished(tenant, device="cpu", seconds=600, when=noon)
    _finished(tenant, device="cpu", seconds=999, when=noon - timedelta(days=1))  # another day
    version = make_model_version(tenant, name="clicks")
    for hours, count, explained in ((1, 40, 3), (5, 2, 0)):
        PredictionUsage.objects.create(
            tenant=tenant,
            model_name="clicks",
            version=1,
            period_start=noon - timedelta(hours=hours),
            requests=count,
            predictions=count,
            explanations=explained,
        )
    PredictionUsage.objects.create(
        tenant=tenant_b.tenant, model_name="clicks", version=1, period_start=noon, requests=7, predictions=7
    )
    services.aggregate_usage(day=today)
    services.aggregate_usage(day=today)  # again: the same rows, not twice as many
    rows = {(r.kind, r.model_name): r.quantity for r in UsageRecord.objects.for_tenant(tenant).filter(day=today)}
    stored = sum(d.size_bytes for d in tenant.datasets_dataset_set.all()) + version.size_bytes
    assert rows == {
        ("gpu_seconds", ""): Decimal("1800.500"),
        ("cpu_seconds", ""): Decimal("600.000"),
        ("storage_byte_days", ""): Decimal(stored),
        ("predictions", "clicks"): Decimal(42),
        ("explanations", "clicks"): Decimal(3),  # apart from predictions
    }
    assert UsageRecord.objects.for_tenant(tenant_b.tenant).get(day=today, kind="predictions").quantity == 7


def test_usage_endpoint_groups_and_refuses_bad_queries(tenant_a, api_a, api_b):
    tenant = tenant_a.tenant
    today = timezone.now().date()
    for day, kind, quantity, model in (
        (today, "cpu_seconds", 100, ""),
        (today, "predictions", 30, "clicks"),
        (today - timedelta(days=1), "predictions", 12, "clicks"),
        (today, "predictions", 5, "other"),
    ):
        UsageRecord.objects.create(
            tenant=tenant, day=day, kind=kind, quantity=quantity, model_name=model, version=1 if model else None
        )
    start = (today - timedelta(days=1)).isoformat()
    by_kind = api_a.get(f"/api/v1/usage?from={start}&group_by=kind").json()["results"]
    assert {r["kind"]: Decimal(r["quantity"]) for r in by_kind} == {"cpu_seconds": 100, "predictions": 47}
    by_model = api_a.get(f"/api/v1/usage?from={start}&group_by=model").json()["results"]
    assert [(r["model_name"], Decimal(r["quantity"])) for r in by_model] == [("clicks", 42), ("other", 5)]
    by_day = api_a.get(f"/api/v1/usage?from={start}&to={today.isoformat()}").json()["results"]
    assert len(by_day) == 3
    assert api_b.get(f"/api/v1/usage?from={start}&group_by=kind").json()["results"] == []
    for query in (
        "from=2026-13-01",
        "group_by=week",
        "colour=red",
        f"from={today}&to={today - timedelta(days=2)}",
        "from=2020-01-01&to=2026-01-01",
    ):
        response = api_a.get(f"/api/v1/usage?{query}")
        assert response.status_code == 400, query
        assert "error" in response.json()


def test_billing_estimate_and_quotas(tenant_a, api_a):
    tenant = tenant_a.tenant
    tenant.plan = priced_plan()
    tenant.save()
    UsageRecord.objects.create(tenant=tenant, day=date(2026, 10, 3), kind="gpu_seconds", quantity=7200)
    UsageRecord.objects.create(tenant=tenant, day=date(2026, 11, 3), kind="gpu_seconds", quantity=3600)
    estimate = api_a.get("/api/v1/billing/estimate?month=2026-10").json()
    assert estimate["month"] == "2026-10" and estimate["currency"] == "USD"
    assert {i["kind"]: i["amount"] for i in estimate["line_items"]}["gpu"] == "5.00"
    assert estimate["total"] == "54.00"
    for bad in ("2026-13", "26-10", "2026-10-01", "x"):
        assert api_a.get(f"/api/v1/billing/estimate?month={bad}").status_code == 400
    quotas = {q["name"]: q for q in api_a.get("/api/v1/quotas").json()["quotas"]}
    assert quotas["concurrent_jobs"] == {"name": "concurrent_jobs", "used": 0, "limit": tenant.plan.max_concurrent_jobs}
    assert quotas["predictions_per_minute"]["limit"] == tenant.plan.predictions_per_minute


def test_explanations_are_a_usage_kind_and_a_line_of_their_own_on_the_bill(tenant_a, api_a):
    tenant = tenant_a.tenant
    tenant.plan = priced_plan()
    tenant.save()
    for kind, quantity in (("predictions", 4000), ("explanations", 2000)):
        UsageRecord.objects.create(
            tenant=tenant, day=date(2026, 10, 3), kind=kind, quantity=quantity, model_name="clicks", version=2
        )
    estimate = api_a.get("/api/v1/billing/estimate?month=2026-10").json()
    lines = {i["kind"]: i for i in estimate["line_items"]}
    assert lines["explanations"]["quantity"] == "2.000000" and lines["explanations"]["unit"] == "1,000 explanations"
    assert lines["explanations"]["unit_price"] == "2.5000" and lines["explanations"]["amount"] == "5.00"
    assert lines["predictions"]["amount"] == "0.20"  # 4 x 0.05
    assert estimate["total"] == "54.20"
    assert estimate["prices"][0]["price_per_1k_explanations"] == "2.5000"
    by_model = api_a.get("/api/v1/usage?from=2026-10-01&to=2026-10-31&group_by=model").json()["results"]
    assert [(r["model_name"], r["version"], r["kind"], Decimal(r["quantity"])) for r in by_model] == [
        ("clicks", 2, "predictions", 4000),
        ("clicks", 2, "explanations", 2000),
    ]
    page = signed_in(tenant_a.owner).get(reverse("dashboard:usage"), {"month": "2026-10"}).content.decode()
    assert "Explanations" in page and "1,000 explanations" in page and "5.00" in page
