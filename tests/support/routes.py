"""Walks the URL configuration to list every REST API route (no hand-kept list)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.urls import URLPattern, URLResolver, get_resolver

API_PREFIX = "api/v1/"


@dataclass(frozen=True)
class ApiRoute:
    name: str
    pattern: str
    view_class: type
    methods: tuple[str, ...]
    kwargs: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.pattern} [{self.name}]"


def _walk(patterns, prefix: str = ""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry


def _methods(callback) -> tuple[str, ...]:
    actions = getattr(callback, "actions", None)
    if actions:
        return tuple(sorted(m for m in actions if m not in {"head", "options"}))
    cls = callback.cls
    return tuple(sorted(m for m in cls.http_method_names if m not in {"head", "options"} and hasattr(cls, m)))


def api_routes() -> list[ApiRoute]:
    routes = []
    for pattern, entry in _walk(get_resolver().url_patterns):
        clean = re.sub(r"(^|/)\^", r"\1", pattern).replace("$", "")
        if not clean.startswith(API_PREFIX):
            continue
        view_class = getattr(entry.callback, "cls", None)
        if view_class is None:
            raise AssertionError(f"{clean} is not a DRF view; every API route must be one")
        routes.append(
            ApiRoute(
                name=entry.name,
                pattern=clean,
                view_class=view_class,
                methods=_methods(entry.callback),
                kwargs=tuple(sorted(entry.pattern.regex.groupindex)),
            )
        )
    return routes
