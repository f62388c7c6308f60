"""Query-parameter checks shared by list endpoints: a bad value is a 400 naming the parameter."""

from __future__ import annotations

from rest_framework.exceptions import ValidationError


def filter_status(queryset, request, allowed: list[str]):
    wanted = request.query_params.get("status")
    if wanted is None:
        return queryset
    if wanted not in allowed:
        raise ValidationError({"status": [f"One of {', '.join(allowed)}."]})
    return queryset.filter(status=wanted)


def text_param(request, name: str) -> str:
    value = request.query_params.get(name, "")
    if "\x00" in value or len(value) > 200:
        raise ValidationError({name: ["Invalid value."]})
    return value
