"""The platform's live state for operators: Celery workers and their tasks, queue lengths, serving processes.

Each source is asked with a short timeout and reported as unavailable
rather than failing the page: the status page is most needed when
something is down.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from serving.models import ServingProcess

logger = logging.getLogger(__name__)
SERVING_STALE_AFTER = timedelta(seconds=60)


def celery_workers(*, timeout: float = 1.0) -> dict[str, Any]:
    """Workers that answered a broadcast: their queues and the tasks they are running."""
    from config.celery import app

    try:
        inspect = app.control.inspect(timeout=timeout)
        queues, active = inspect.active_queues() or {}, inspect.active() or {}
    except Exception as exc:  # broker away: say so on the page
        logger.warning("worker inspection failed", exc_info=True)
        return {"error": f"{type(exc).__name__}: {exc}", "workers": []}
    workers = [
        {
            "name": name,
            "queues": sorted(q["name"] for q in queues.get(name, [])),
            "active": [
                {"id": t.get("id"), "name": t.get("name"), "args": str(t.get("kwargs") or t.get("args"))[:200]}
                for t in active.get(name, [])
            ],
        }
        for name in sorted(set(queues) | set(active))
    ]
    return {"error": None, "workers": workers}


def queue_lengths() -> list[dict[str, Any]]:
    """Messages waiting in each configured queue (None where the broker could not say)."""
    from config.celery import app

    lengths = []
    try:
        with app.connection_for_read() as connection:
            for queue in settings.CELERY_TASK_QUEUES:
                # A channel per queue: AMQP closes a channel whose passive declare fails.
                try:
                    with connection.channel() as channel:
                        count = channel.queue_declare(queue=queue.name, passive=True).message_count
                except Exception:  # a queue nobody has declared yet
                    logger.info("queue %s has no length to report", queue.name, exc_info=True)
                    count = None
                lengths.append({"queue": queue.name, "waiting": count})
    except Exception:
        logger.warning("queue lengths unavailable", exc_info=True)
        return [{"queue": q.name, "waiting": None} for q in settings.CELERY_TASK_QUEUES]
    return lengths


def serving_processes() -> list[dict[str, Any]]:
    now = timezone.now()
    return [
        {
            "name": p.name,
            "started_at": p.started_at,
            "heartbeat_at": p.heartbeat_at,
            "live": now - p.heartbeat_at < SERVING_STALE_AFTER,
            "used_mb": p.cache_used_bytes / 2**20,
            "budget_mb": p.cache_budget_bytes / 2**20,
            "loaded": p.loaded,
        }
        for p in ServingProcess.objects.all()
    ]
