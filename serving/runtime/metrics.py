"""Prometheus text exposition for ``GET /metrics`` on the serving process (no client library needed).

The metrics name models and versions, so they are behind a bearer token
(``SERVING_METRICS_TOKEN``, compared in constant time) and label each model
by its tenant's id, never the slug: a scrape, a dashboard or a leaked
screenshot says which models are busy, not whose. Production settings refuse
to start the serving process without a token (:func:`require_token`).
"""

from __future__ import annotations

import bisect
import hmac
import sys
from collections import defaultdict

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from serving.runtime.cache import Key, ModelCache

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}" if labels else ""


def _model_labels(key: Key) -> str:
    tenant_id, model_name, version = key
    return _labels(tenant=tenant_id, model=model_name, version=str(version))


def authorized(presented: bytes | None) -> bool:
    """Whether an ``Authorization`` header carries the metrics token (open when none is configured).

    Compared with ``hmac.compare_digest`` so the answer time does not tell how much of a guess was right.
    """
    token = settings.SERVING_METRICS_TOKEN
    if not token:
        return True
    return hmac.compare_digest(presented or b"", f"Bearer {token}".encode())


def require_token() -> None:
    """Refuse to start where settings demand a metrics token (production) and none is set."""
    if getattr(settings, "SERVING_METRICS_TOKEN_REQUIRED", False) and not settings.SERVING_METRICS_TOKEN:
        raise ImproperlyConfigured(
            "SERVING_METRICS_TOKEN must be set with config.settings.production: the serving process's /metrics "
            "name models and versions and must not be open."
        )


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip((*self.buckets, "+Inf"), self.counts, strict=True):
            running += count
            out.append(f'{name}_bucket{{le="{bound}"}} {running}')
        return [*out, f"{name}_sum {self.total:.6f}", f"{name}_count {running}"]


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.predictions: dict[Key, int] = defaultdict(int)  # by VersionSpec.key: (tenant id, model, version)
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batch_rows = Histogram(BATCH_BUCKETS)

    def request(self, *, protocol: str, status: int, seconds: float) -> None:
        self.requests[(protocol, status)] += 1
        self.latency.observe(seconds)

    def render(self, cache: ModelCache) -> str:
        lines = ["# TYPE serving_requests_total counter"]
        lines += [
            f"serving_requests_total{_labels(protocol=p, code=str(c))} {n}"
            for (p, c), n in sorted(self.requests.items())
        ]
        lines.append("# TYPE serving_request_seconds histogram")
        lines += self.latency.lines("serving_request_seconds")
        lines.append("# TYPE serving_batch_rows histogram")
        lines += self.batch_rows.lines("serving_batch_rows")
        lines.append("# TYPE serving_predictions_total counter")
        lines += [f"serving_predictions_total{_model_labels(k)} {n}" for k, n in sorted(self.predictions.items())]
        lines += [
            "# TYPE serving_cache_budget_bytes gauge",
            f"serving_cache_budget_bytes {cache.budget_bytes}",
            "# TYPE serving_cache_used_bytes gauge",
            f"serving_cache_used_bytes {cache.used_bytes}",
        ]
        per_model = {
            "serving_model_loads_total": "loads",
            "serving_model_load_failures_total": "load_failures",
            "serving_model_load_seconds_total": "load_seconds",
            "serving_model_cache_hits_total": "hits",
            "serving_model_cache_misses_total": "misses",
            "serving_model_evictions_total": "evictions",
        }
        for metric, field in per_model.items():
            lines.append(f"# TYPE {metric} counter")
            lines += [f"{metric}{_model_labels(k)} {getattr(c, field)}" for k, c in sorted(cache.counters.items())]
        lines.append("# TYPE serving_model_memory_bytes gauge")
        lines += [f"serving_model_memory_bytes{_model_labels(m.spec.key)} {m.memory_bytes}" for m in cache.loaded()]
        lines.append("# TYPE serving_model_runtime gauge")
        lines += [
            f"serving_model_runtime{_labels(tenant=t, model=n, version=str(v), runtime=m.runtime)} 1"
            for m in cache.loaded()
            for t, n, v in [m.spec.key]
        ]
        # 1 once a version without a compiled artifact made this process import TensorFlow (hundreds of MB).
        lines += [
            "# TYPE serving_tensorflow_loaded gauge",
            f"serving_tensorflow_loaded {int('tensorflow' in sys.modules)}",
        ]
        return "\n".join(lines) + "\n"
