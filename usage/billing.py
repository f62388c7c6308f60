"""Billing arithmetic: usage quantities times the prices in force, in Decimal, rounded half-up to cents.

Pure functions over plain numbers, so the arithmetic is tested exactly and
the same code serves the API's estimate, the dashboard and the admin console.

Prices change over time (``tenants.PlanPrice``, appended by
``services.set_plan_prices``): each day's usage is charged at the prices in
force that day, so a past month's bill never changes when a plan's prices
do. The monthly base fee is the one in force on the month's first day (it
is a subscription charged for the month ahead, not prorated). A line whose
usage spans a price change lists each price period with its quantity,
price and amount; its amount is the sum of those (each rounded to cents).
"""

from __future__ import annotations

import bisect
import calendar
import re
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.utils import timezone

from tenants.models import PRICE_FIELDS

CENT = Decimal("0.01")
GB = Decimal(10**9)
QUANTITY = Decimal("0.000001")
UNIT_PRICE = Decimal("0.0001")
# Bills exist for these years; the upper bound leaves the next month a valid date too (the pages link it).
MIN_YEAR, MAX_YEAR = 1970, 9998
_MONTH_RE = re.compile(r"([0-9]{4})-([0-9]{2})")  # ASCII digits only (\d and int() accept any Unicode digit)


class InvalidMonth(ValueError):
    """A month that is not "YYYY-MM" with ASCII digits, or outside MIN_YEAR..MAX_YEAR."""


@dataclass(frozen=True)
class Prices:
    """One set of a plan's prices; ``effective_from`` None means "since always" (a plan without price history)."""

    effective_from: date | None
    currency: str
    monthly_base_fee: Decimal
    price_gpu_hour: Decimal
    price_cpu_hour: Decimal
    price_gb_month: Decimal
    price_per_1k_predictions: Decimal
    price_per_1k_explanations: Decimal
    plan: str | None = None  # the plan's slug, when a bill spans more than one plan

    @classmethod
    def of(cls, source: Any, *, effective_from: date | None = None) -> Prices:
        """From a ``Plan`` (its current fields) or a ``PlanPrice`` row (which has its own ``effective_from``)."""
        values = {name: getattr(source, name) for name in PRICE_FIELDS}
        values = {name: value if name == "currency" else Decimal(value) for name, value in values.items()}
        return cls(effective_from=getattr(source, "effective_from", effective_from), **values)

    def as_dict(self) -> dict[str, str | None]:
        return {
            "effective_from": self.effective_from.isoformat() if self.effective_from else None,
            "plan": self.plan,
            **{name: str(getattr(self, name)) for name in PRICE_FIELDS},
        }


@dataclass(frozen=True)
class Period:
    """The part of one line charged at one price."""

    effective_from: date | None
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal

    def as_dict(self) -> dict[str, str | None]:
        return {
            "effective_from": self.effective_from.isoformat() if self.effective_from else None,
            "quantity": str(self.quantity),
            "unit_price": str(self.unit_price),
            "amount": str(self.amount),
        }


@dataclass(frozen=True)
class LineItem:
    kind: str
    description: str
    quantity: Decimal
    unit: str
    unit_price: Decimal  # the price when one applied; else the line's average (amount / quantity)
    amount: Decimal
    periods: tuple[Period, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "description": self.description,
            "quantity": str(self.quantity),
            "unit": self.unit,
            "unit_price": str(self.unit_price),
            "amount": str(self.amount),
            "prices": [period.as_dict() for period in self.periods],
        }


def parse_month(raw: str | None) -> date:
    """The first day of a "YYYY-MM" month; :class:`InvalidMonth` for anything else (the API answers 400)."""
    match = _MONTH_RE.fullmatch(raw or "")
    if match is None:
        raise InvalidMonth("month must be YYYY-MM.")
    year, month = int(match.group(1)), int(match.group(2))
    if not 1 <= month <= 12:
        raise InvalidMonth("month must be between 01 and 12.")
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise InvalidMonth(f"year must be between {MIN_YEAR} and {MAX_YEAR}.")
    return date(year, month, 1)


def month_or_current(raw: str | None) -> date:
    """The first day of a "YYYY-MM" month; this month for anything else (the pages' lenient month picker)."""
    try:
        return parse_month(raw)
    except InvalidMonth:
        return timezone.now().date().replace(day=1)


def neighbour_months(first: date) -> tuple[date, date]:
    """The first days of the month before and the month after."""
    previous = (first - timedelta(days=1)).replace(day=1)
    following = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    return previous, following


def days_in(month: date) -> int:
    return calendar.monthrange(month.year, month.month)[1]


def month_schedule(*, history: list[Prices], fallback: Prices, first: date, last: date) -> list[Prices]:
    """The price sets in force from ``first`` to ``last``, oldest first: the one on ``first``, then each change.

    ``history`` is a plan's dated price rows (any order); ``fallback`` (the plan's own fields) applies before
    the first row, so a plan that never had a price change is billed at its prices.
    """
    dated = sorted((p for p in history if p.effective_from is not None), key=lambda p: p.effective_from)
    opening = fallback
    for prices in dated:
        if prices.effective_from <= first:
            opening = prices
    return [opening, *(p for p in dated if first < p.effective_from <= last)]


def tenant_schedule(
    *, plan_periods: list[tuple[date, Any]], schedules: dict[Any, list[Prices]], first: date, last: date
) -> list[Prices]:
    """The price sets in force for one tenant from ``first`` to ``last``, when its plan may change meanwhile.

    ``plan_periods`` is the tenant's plan history as (effective_from, plan key) pairs, any order, non-empty;
    ``schedules`` maps each of those plans to its :func:`month_schedule`. Each day is priced on the plan the
    tenant had that day, at that plan's prices that day. Before its first period (the month it was created) a
    tenant is on its first plan.
    """
    periods = sorted(plan_periods, key=lambda period: period[0])
    opening_plan = periods[0][1]
    for start, plan in periods:
        if start <= first:
            opening_plan = plan
    segments = [(first, opening_plan), *((start, plan) for start, plan in periods if first < start <= last)]
    merged: list[Prices] = []
    for index, (start, plan) in enumerate(segments):
        end = segments[index + 1][0] if index + 1 < len(segments) else last + timedelta(days=1)
        plan_prices = schedules[plan]
        in_force = plan_prices[0]
        for prices in plan_prices[1:]:
            if prices.effective_from <= start:
                in_force = prices
        merged.append(in_force if index == 0 else replace(in_force, effective_from=start))
        merged.extend(p for p in plan_prices[1:] if start < p.effective_from < end)
    return merged


# kind, description, unit, usage kind, price field
_METERED = (
    ("gpu", "GPU training", "GPU-hour", "gpu_seconds", "price_gpu_hour"),
    ("cpu", "CPU training", "CPU-hour", "cpu_seconds", "price_cpu_hour"),
    ("storage", "Storage", "GB-month", "storage_byte_days", "price_gb_month"),
    ("predictions", "Predictions", "1,000 predictions", "predictions", "price_per_1k_predictions"),
    ("explanations", "Explanations", "1,000 explanations", "explanations", "price_per_1k_explanations"),
)


def _units(usage_kind: str, quantity: Decimal, month: date) -> Decimal:
    """A usage record's quantity in the unit it is priced in."""
    if usage_kind in ("gpu_seconds", "cpu_seconds"):
        return quantity / 3600
    if usage_kind == "storage_byte_days":
        return quantity / GB / days_in(month)
    return quantity / 1000


def _line(kind: str, text: str, unit: str, periods: list[Period]) -> LineItem:
    used = [p for p in periods if p.quantity] or periods[:1]
    quantity = sum((p.quantity for p in used), Decimal(0))
    amount = sum((p.amount for p in used), Decimal("0.00"))
    if len(used) == 1:
        unit_price = used[0].unit_price
    else:
        unit_price = (amount / quantity).quantize(UNIT_PRICE, rounding=ROUND_HALF_UP) if quantity else Decimal(0)
    return LineItem(
        kind=kind,
        description=text,
        quantity=quantity.quantize(QUANTITY, rounding=ROUND_HALF_UP),
        unit=unit,
        unit_price=unit_price,
        amount=amount,
        periods=tuple(used),
    )


def _period(prices: Prices, quantity: Decimal, price: Decimal) -> Period:
    return Period(
        effective_from=prices.effective_from,
        quantity=quantity.quantize(QUANTITY, rounding=ROUND_HALF_UP),
        unit_price=price,
        amount=(quantity * price).quantize(CENT, rounding=ROUND_HALF_UP),
    )


def bill_items(*, month: date, daily: dict[date, dict[str, Decimal]], schedule: list[Prices]) -> list[LineItem]:
    """The month's charges: each day's usage (``daily[day][usage kind]``) at the prices in force that day.

    ``schedule`` comes from :func:`month_schedule` (the opening prices first).
    """
    starts = [date.min] + [p.effective_from for p in schedule[1:]]
    per_period: list[dict[str, Decimal]] = [{} for _ in schedule]
    for day, totals in daily.items():
        index = bisect.bisect_right(starts, day) - 1
        bucket = per_period[max(index, 0)]
        for usage_kind, quantity in totals.items():
            bucket[usage_kind] = bucket.get(usage_kind, Decimal(0)) + Decimal(quantity)
    opening = schedule[0]
    items = [_line("base_fee", "Monthly base fee", "month", [_period(opening, Decimal(1), opening.monthly_base_fee)])]
    for kind, text, unit, usage_kind, field in _METERED:
        periods = [
            _period(prices, _units(usage_kind, bucket.get(usage_kind, Decimal(0)), month), getattr(prices, field))
            for prices, bucket in zip(schedule, per_period, strict=True)
        ]
        items.append(_line(kind, text, unit, periods))
    return items


def line_items(*, plan, month: date, totals: dict[str, Decimal]) -> list[LineItem]:
    """The month's charges from its usage totals at the plan's current prices (one price per kind)."""
    return bill_items(month=month, daily={month: totals}, schedule=[Prices.of(plan)])


def total(items: list[LineItem]) -> Decimal:
    return sum((item.amount for item in items), Decimal("0.00"))
