"""Template filters: JSON-ish values (statistics, audit details) as short readable text."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()
MAX_ITEMS = 5


@register.filter
def compact(value: Any) -> str:
    """``{"min": 2, "max": 4}`` -> "min 2, max 4"; top values as "a (3), b (1)…"; floats to 4 significant digits."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{key} {compact(item)}" for key, item in value.items())
    if isinstance(value, list | tuple):
        pairs = all(isinstance(item, list | tuple) and len(item) == 2 for item in value)
        shown = [f"{item[0]} ({item[1]})" if pairs else compact(item) for item in value[:MAX_ITEMS]]
        return ", ".join(shown) + ("…" if len(value) > MAX_ITEMS else "")
    return "" if value is None else str(value)
