"""The trainer's door to the model registry, which lives in the app after training (``serving``).

Training may not import serving, yet a finished job must become a model version. So training states here what it
needs from a registry (:class:`Publisher`) and serving binds its implementation when Django starts
(``serving.apps.ServingConfig.ready`` calls :func:`bind`). The trainer asks :func:`publisher` for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from django.core.exceptions import ImproperlyConfigured


class Publisher(Protocol):
    def reserve_version(self, *, job: Any) -> Any:
        """The job's version row (invisible until published), reserved once: a retried job gets the same one."""

    def publish(self, *, version: Any, export_dir: Path, manifest_fields: dict[str, Any], metrics: dict) -> Any:
        """Upload the exported SavedModel under the version, manifest last, then make the version visible."""


_bound: Publisher | None = None


def bind(publisher: Publisher) -> None:
    global _bound
    _bound = publisher


def publisher() -> Publisher:
    if _bound is None:
        raise ImproperlyConfigured("No model registry is bound for training (is the 'serving' app installed?).")
    return _bound
