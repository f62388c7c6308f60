"""Celery queue lengths for the API's ``/metrics``, read from the broker through kombu when scraped.

One passive ``queue_declare`` per configured queue: RabbitMQ answers its ready-message count; kombu's Redis
transport counts the queue's lists (``LLEN`` of each priority's key) and the filesystem transport its message
files. A queue the broker does not know yet (Redis deletes an empty list) is 0. The reads run in a helper thread
and the scrape waits at most ``METRICS_SCRAPE_TIMEOUT_SECONDS`` for them (the sockets time out on their own too),
so a broker that hangs costs the scrape a bounded wait and a ``mlplatform_scrape_error{source="broker"}``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from prometheus_client.core import GaugeMetricFamily, Metric

from core import metrics

# Two threads: a scrape whose broker read timed out leaves its thread to finish on its socket timeout.
_executor = ThreadPoolExecutor(2, thread_name_prefix="metrics-broker")


def queue_names() -> list[str]:
    return [queue.name for queue in settings.CELERY_TASK_QUEUES]


def queue_lengths(timeout: float) -> dict[str, int]:
    """Messages waiting in each configured queue (not those a worker holds unacknowledged)."""
    from config.celery import app

    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if not settings.CELERY_BROKER_URL.startswith(("redis", "rediss")):
        options = {}
    lengths = {}
    with app.connection_for_read(
        url=settings.CELERY_BROKER_URL, connect_timeout=timeout, transport_options=options
    ) as connection:
        connection.ensure_connection(max_retries=1, timeout=timeout)
        for name in queue_names():
            channel = connection.channel()  # its own channel: AMQP closes a channel on NOT_FOUND
            try:
                lengths[name] = channel.queue_declare(queue=name, passive=True).message_count
            except connection.channel_errors:  # no such queue yet: nothing waits in it
                lengths[name] = 0
            finally:
                with contextlib.suppress(Exception):
                    channel.close()
    return lengths


def collect(timeout: float) -> Iterable[Metric]:
    lengths = _executor.submit(queue_lengths, timeout).result(timeout=timeout + 0.5)
    gauge = GaugeMetricFamily("celery_queue_length", "Messages waiting in a Celery queue.", labels=["queue"])
    for name, length in sorted(lengths.items()):
        gauge.add_metric([name], length)
    return [gauge]


def register() -> None:
    metrics.register_scrape_collector("broker", collect)
