"""``GET /metrics`` on the API: request counts and latency by route, and the platform's state read at scrape time.

- ``api_requests_total{method, route, status}`` and ``api_request_seconds{method, route}``: ``route`` is the
  URL pattern that matched (``api/v1/jobs/<uuid:pk>``), never the raw path, so ids cannot grow the series;
  ``unmatched`` for paths no pattern matched, ``status`` is the class (``2xx`` … ``5xx``). Under gunicorn the
  workers write to ``PROMETHEUS_MULTIPROC_DIR`` (set and emptied by ``platform/gunicorn.conf.py``) and any
  worker's scrape adds up all of them; in a single process (runserver, tests) the values are in memory.
- Series computed when scraped: Celery queue lengths (``core.queue_metrics``) and whatever the apps register
  with :func:`register_scrape_collector` (jobs by state, from ``training``). Each is bounded in time; one that
  fails or times out is reported by ``mlplatform_scrape_error{source}`` instead of failing the scrape.

The middleware answers ``/metrics`` itself, first in ``MIDDLEWARE``: before host validation and the https
redirect, since a scraper addresses a pod by its IP over plain HTTP. It needs ``Authorization: Bearer
<METRICS_TOKEN>`` (constant-time compare); production settings refuse to start without a token.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from core.bearer import bearer_matches
from core.errors import error_body
from core.middleware import route_of

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METRICS_PATH = "/metrics"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Registered in no registry: a scrape builds one (in multiprocess mode it reads the workers' files instead).
REQUESTS = Counter(
    "api_requests",
    "API requests answered, by method, route pattern and status class.",
    ["method", "route", "status"],
    registry=None,
)
LATENCY = Histogram(
    "api_request_seconds",
    "Seconds from request to response (until the view returned), by method and route pattern.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
    registry=None,
)

# name -> function(timeout seconds) returning metric families; called on every scrape.
ScrapeCollector = Callable[[float], Iterable[Metric]]
_scrape_collectors: dict[str, ScrapeCollector] = {}


def register_scrape_collector(name: str, collect: ScrapeCollector) -> None:
    """Add series computed at scrape time (an app's ``ready()`` registers its own; same name replaces)."""
    _scrape_collectors[name] = collect


def authorized(presented: str) -> bool:
    """Whether an ``Authorization`` header value carries the metrics token (open when none is configured)."""
    return not settings.METRICS_TOKEN or bearer_matches(presented, settings.METRICS_TOKEN)


def require_token() -> None:
    """Refuse to start where settings demand a metrics token (production) and none is set."""
    if getattr(settings, "METRICS_TOKEN_REQUIRED", False) and not settings.METRICS_TOKEN:
        raise ImproperlyConfigured(
            "METRICS_TOKEN must be set with config.settings.production: /metrics names routes, tasks and queues "
            "and must not be open."
        )


def record(*, method: str, route: str, status: int, seconds: float) -> None:
    method = method if method in _METHODS else "other"
    REQUESTS.labels(method=method, route=route, status=f"{status // 100}xx").inc()
    LATENCY.labels(method=method, route=route).observe(seconds)


def render() -> bytes:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(REQUESTS)
        registry.register(LATENCY)
    registry.register(_AtScrape())
    return generate_latest(registry)


class _AtScrape:
    """The registered scrape-time collectors, each isolated: a failure is a series, not a failed scrape."""

    def collect(self) -> Iterable[Metric]:
        errors = GaugeMetricFamily(
            "mlplatform_scrape_error",
            "1 when this scrape could not read a source (broker or database down or slower than the timeout).",
            labels=["source"],
        )
        seconds = GaugeMetricFamily(
            "mlplatform_scrape_source_seconds", "Seconds this scrape spent reading each source.", labels=["source"]
        )
        timeout = float(settings.METRICS_SCRAPE_TIMEOUT_SECONDS)
        for name, collect in sorted(_scrape_collectors.items()):
            started = time.perf_counter()
            try:
                families = list(collect(timeout))
            except Exception as exc:  # noqa: BLE001 - any failure is reported as a series
                logger.warning("metrics: could not read %s: %s", name, f"{type(exc).__name__}: {exc}"[:300])
                errors.add_metric([name], 1)
                families = []
            else:
                errors.add_metric([name], 0)
            seconds.add_metric([name], time.perf_counter() - started)
            yield from families
        yield errors
        yield seconds


def metrics_response(request: HttpRequest) -> HttpResponse:
    if request.method not in {"GET", "HEAD"}:
        return JsonResponse(
            error_body("method_not_allowed", "Use GET."),
            status=405,
            headers={"Allow": "GET"},
        )
    if not authorized(request.headers.get("Authorization", "")):
        return JsonResponse(
            error_body("not_authenticated", "Send the metrics token as 'Authorization: Bearer <token>'."),
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    return HttpResponse(render(), content_type=CONTENT_TYPE)


class MetricsMiddleware:
    """Times every request by its route pattern, and answers ``/metrics`` (first in ``MIDDLEWARE``)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        require_token()  # a gunicorn worker without the token production needs does not boot
        from core import queue_metrics  # the broker's series: registered once the API loads its middleware

        queue_metrics.register()
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info == METRICS_PATH:
            return metrics_response(request)
        started = time.perf_counter()
        response = self.get_response(request)
        record(
            method=request.method or "",
            route=route_of(request),
            status=response.status_code,
            seconds=time.perf_counter() - started,
        )
        return response
