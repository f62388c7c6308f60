"""Jobs by state for the API's ``/metrics`` (registered with ``core.metrics`` when the app is ready)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from core import metrics
from training import selectors


def collect(timeout: float) -> Iterable[Metric]:
    counts, oldest_queued = selectors.job_counts_by_status(timeout_seconds=timeout)
    jobs = GaugeMetricFamily("training_jobs", "Training jobs of every tenant, by status.", labels=["status"])
    for status, count in sorted(counts.items()):
        jobs.add_metric([status], count)
    age = GaugeMetricFamily(
        "training_oldest_queued_job_age_seconds",
        "Age of the oldest job still queued (0 when none is): growing means no worker takes jobs.",
        value=oldest_queued or 0.0,
    )
    return [jobs, age]


def register() -> None:
    metrics.register_scrape_collector("jobs", collect)
