"""Operators' pages (each wrapped by ``admin.site.admin_view``: staff only): usage and cost per tenant for a month,
and the platform's status."""

from __future__ import annotations

import csv

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from core import probes
from usage import billing, selectors, status

KINDS = ["base_fee", "gpu", "cpu", "storage", "predictions", "explanations"]


def monthly_usage(request: HttpRequest) -> HttpResponse:
    month = billing.month_or_current(request.GET.get("month"))
    bills = selectors.every_tenants_bill(month=month)
    rows = []
    for bill in bills:
        items = {item["kind"]: item for item in bill["line_items"]}
        rows.append({"bill": bill, "items": [items.get(kind) for kind in KINDS]})
    if request.GET.get("format") == "csv":
        response = HttpResponse(content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="usage-{month:%Y-%m}.csv"'
        writer = csv.writer(response)
        writer.writerow(
            ["tenant", "plan", "currency", *[f"{k}_{f}" for k in KINDS for f in ("quantity", "amount")], "total"]
        )
        for row in rows:
            bill = row["bill"]
            cells = [v for item in row["items"] for v in ((item["quantity"], item["amount"]) if item else ("", ""))]
            writer.writerow([bill["tenant"].slug, bill["plan"], bill["currency"], *cells, bill["total"]])
        return response
    previous, following = billing.neighbour_months(month)
    context = {
        **admin.site.each_context(request),
        "title": f"Usage and cost, {month:%B %Y}",
        "month": month,
        "previous": f"{previous:%Y-%m}",
        "following": f"{following:%Y-%m}",
        "kinds": KINDS,
        "rows": rows,
    }
    return render(request, "admin/monthly_usage.html", context)


def platform_status(request):
    """The operators' status page (wrapped by ``admin.site.admin_view``: staff only)."""
    context = {
        **admin.site.each_context(request),
        "title": "Platform status",
        "now": timezone.now(),
        "queues": status.queue_lengths(),
        "celery": status.celery_workers(),
        "serving": status.serving_processes(),
        "readiness": [{"name": name, "ok": ok, "reason": reason} for name, (ok, reason) in probes.readiness().items()],
    }
    return render(request, "admin/platform_status.html", context)
