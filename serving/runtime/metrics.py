"""Prometheus text exposition for ``GET /metrics`` on the serving process (no client library needed)."""

from __future__ import annotations

import bisect
from collections import defaultdict

from serving.runtime.cache import ModelCache

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}" if labels else ""


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
        self.predictions: dict[str, int] = defaultdict(int)
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
        lines += [f"serving_predictions_total{_labels(model=m)} {n}" for m, n in sorted(self.predictions.items())]
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
            lines += [f"{metric}{_labels(model=m)} {getattr(c, field)}" for m, c in sorted(cache.counters.items())]
        lines.append("# TYPE serving_model_memory_bytes gauge")
        lines += [f"serving_model_memory_bytes{_labels(model=m.spec.label)} {m.memory_bytes}" for m in cache.loaded()]
        return "\n".join(lines) + "\n"
