"""The overview (quotas, running jobs, recent models, this month's bill) and the usage and billing page."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from dashboard.access import TenantPage
from serving import selectors as serving_selectors
from training import selectors as training_selectors
from training.models import TrainingJob
from usage import billing, selectors
from usage.models import UsageRecord

USAGE_UNITS = {
    UsageRecord.Kind.GPU_SECONDS: ("GPU hours", 3600),
    UsageRecord.Kind.CPU_SECONDS: ("CPU hours", 3600),
    UsageRecord.Kind.STORAGE_BYTE_DAYS: ("GB-days", 1024**3),
    UsageRecord.Kind.PREDICTIONS: ("predictions", 1),
    UsageRecord.Kind.EXPLANATIONS: ("explanations", 1),
}


def _quota_rows(tenant) -> list[dict[str, Any]]:
    rows = []
    for quota in selectors.quota_use(tenant=tenant)["quotas"]:
        used, limit = quota["used"], quota["limit"]
        share = min(100, round(100 * used / limit)) if used is not None and limit else None
        rows.append({**quota, "label": quota["name"].replace("_", " "), "percent": share})
    return rows


class OverviewPage(TenantPage):
    http_method_names = ["get", "head"]
    template_name = "dashboard/overview.html"
    section = "overview"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        tenant = self.caller.tenant
        context.update(
            quotas=_quota_rows(tenant),
            running=training_selectors.jobs_of(tenant=tenant).filter(status__in=TrainingJob.ACTIVE)[:20],
            recent_jobs=training_selectors.jobs_of(tenant=tenant).order_by("-created_at")[:5],
            models=serving_selectors.models_of(tenant=tenant).order_by("-created_at")[:5],
            bill=selectors.billing_estimate(tenant=tenant, month=timezone.now().date()),
        )
        return context


class UsagePage(TenantPage):
    """Daily usage per kind for a month (charts), predictions and explanations per model, and the month's bill."""

    http_method_names = ["get", "head"]
    template_name = "dashboard/usage.html"
    section = "usage"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        tenant, first = self.caller.tenant, billing.month_or_current(self.request.GET.get("month"))
        previous, following = billing.neighbour_months(first)
        last = following - timedelta(days=1)
        days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
        daily = selectors.usage(tenant=tenant, start=first, end=last, group_by="day")
        series = []
        for kind, (unit, divisor) in USAGE_UNITS.items():
            per_day = {row["day"]: float(row["quantity"]) / divisor for row in daily if row["kind"] == kind}
            series.append({"kind": kind, "unit": unit, "values": [round(per_day.get(d, 0.0), 4) for d in days]})
        context.update(
            month=first,
            previous_month=previous.strftime("%Y-%m"),
            next_month=following.strftime("%Y-%m"),
            chart={"days": [d.isoformat() for d in days], "series": series},
            by_model=selectors.usage(tenant=tenant, start=first, end=last, group_by="model"),
            bill=selectors.billing_estimate(tenant=tenant, month=first),
            quotas=_quota_rows(tenant),
        )
        return context
