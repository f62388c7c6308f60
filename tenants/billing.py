"""Billing arithmetic: usage quantities times plan prices, in Decimal, rounded half-up to cents.

Pure functions over plain numbers, so the arithmetic is tested exactly and
the same code serves the API's estimate and the admin console.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.utils import timezone

CENT = Decimal("0.01")
GB = Decimal(10**9)


@dataclass(frozen=True)
class LineItem:
    kind: str
    description: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount: Decimal

    def as_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "description": self.description,
            "quantity": str(self.quantity),
            "unit": self.unit,
            "unit_price": str(self.unit_price),
            "amount": str(self.amount),
        }


def month_or_current(raw: str | None) -> date:
    """The first day of a "YYYY-MM" month; this month for anything else (the pages' lenient month picker)."""
    try:
        year, month = (int(part) for part in (raw or "").split("-"))
        if 1970 <= year <= 9998:  # and so its neighbours are dates too
            return date(year, month, 1)
    except ValueError:
        pass
    return timezone.now().date().replace(day=1)


def neighbour_months(first: date) -> tuple[date, date]:
    """The first days of the month before and the month after."""
    previous = (first - timedelta(days=1)).replace(day=1)
    following = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    return previous, following


def days_in(month: date) -> int:
    return calendar.monthrange(month.year, month.month)[1]


def line_items(*, plan, month: date, totals: dict[str, Decimal]) -> list[LineItem]:
    """The month's charges from its usage totals per kind (seconds, byte-days, predictions)."""
    gpu_hours = totals.get("gpu_seconds", Decimal(0)) / 3600
    cpu_hours = totals.get("cpu_seconds", Decimal(0)) / 3600
    gb_months = totals.get("storage_byte_days", Decimal(0)) / GB / days_in(month)
    thousands = totals.get("predictions", Decimal(0)) / 1000
    rows = [
        ("base_fee", "Monthly base fee", Decimal(1), "month", plan.monthly_base_fee),
        ("gpu", "GPU training", gpu_hours, "GPU-hour", plan.price_gpu_hour),
        ("cpu", "CPU training", cpu_hours, "CPU-hour", plan.price_cpu_hour),
        ("storage", "Storage", gb_months, "GB-month", plan.price_gb_month),
        ("predictions", "Predictions", thousands, "1,000 predictions", plan.price_per_1k_predictions),
    ]
    return [
        LineItem(
            kind=kind,
            description=text,
            quantity=quantity.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP),
            unit=unit,
            unit_price=Decimal(price),
            amount=(quantity * Decimal(price)).quantize(CENT, rounding=ROUND_HALF_UP),
        )
        for kind, text, quantity, unit, price in rows
    ]


def total(items: list[LineItem]) -> Decimal:
    return sum((item.amount for item in items), Decimal("0.00"))
