"""Sending Celery tasks by name.

Services enqueue work through here instead of importing task modules, so the dependency runs one way: a task
module imports its app's services, never the reverse. Routing (which queue) comes from ``CELERY_TASK_ROUTES`` by
task name, as it does for ``task.delay``.
"""

from __future__ import annotations

from typing import Any

from celery import current_app
from django.db import transaction


def send(task_name: str, /, *, to_queue: str | None = None, **kwargs: Any) -> None:
    """Send the task now (a broker outage raises, as ``delay`` does); ``to_queue`` overrides its route."""
    current_app.send_task(task_name, kwargs=kwargs, **({"queue": to_queue} if to_queue else {}))


def send_on_commit(task_name: str, *, robust: bool = False, **kwargs: Any) -> None:
    """Send the task once the current transaction commits, so the worker finds the rows it is about to read.

    ``robust``: a broker error is logged instead of raised (the change is saved; a periodic sweeper resends).
    """
    transaction.on_commit(lambda: send(task_name, **kwargs), robust=robust)
