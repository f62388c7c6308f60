"""``GET /metrics`` on the serving process: Prometheus text from ``prometheus_client``, across worker processes.

The metrics name models and versions, so they are behind a bearer token
(``SERVING_METRICS_TOKEN``, compared in constant time) and label each model
by its tenant's id, never the slug: a scrape, a dashboard or a leaked
screenshot says which models are busy, not whose. Production settings refuse
to start the serving process without a token (:func:`require_token`).

Two kinds of series:

- Per process, bounded label sets (requests by protocol and code, latency and batch-size histograms):
  ``prometheus_client`` counters and histograms. With ``serve_models --workers N`` the command sets
  ``PROMETHEUS_MULTIPROC_DIR`` and any worker's scrape sums every worker's (``MultiProcessCollector``).
- Per loaded version (memory, runtime, loads, cache hits and misses, predictions) and the cache's totals (memory,
  unloads, whether TensorFlow is loaded): read from the model cache when
  scraped, so a version's series go when it is unloaded. ``prometheus_client`` cannot remove label sets in
  multiprocess mode, so each worker also writes these to a snapshot file in that directory every few seconds
  (and on scrape), and a scrape adds up the snapshots of the workers still alive.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from core.bearer import bearer_matches
from serving.runtime.cache import Key, ModelCache

if TYPE_CHECKING:
    from serving.runtime.explaining import Explainers

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MODEL_LABELS = ("tenant", "model", "version")
SNAPSHOT_PREFIX = "versions-"


def authorized(presented: bytes | None) -> bool:
    """Whether an ``Authorization`` header carries the metrics token (open when none is configured)."""
    return not settings.SERVING_METRICS_TOKEN or bearer_matches(presented, settings.SERVING_METRICS_TOKEN)


def require_token() -> None:
    """Refuse to start where settings demand a metrics token (production) and none is set."""
    if getattr(settings, "SERVING_METRICS_TOKEN_REQUIRED", False) and not settings.SERVING_METRICS_TOKEN:
        raise ImproperlyConfigured(
            "SERVING_METRICS_TOKEN must be set with config.settings.production: the serving process's /metrics "
            "name models and versions and must not be open."
        )


def multiprocess_dir() -> Path | None:
    raw = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(raw) if raw else None


# Per-version series: (name, kind, help, how to read it from a cache's counters).
_VERSION_COUNTERS = {
    "serving_model_loads": ("Loads of the version into this process.", "loads"),
    "serving_model_load_failures": ("Loads of the version that failed.", "load_failures"),
    "serving_model_load_seconds": ("Seconds spent loading the version.", "load_seconds"),
    "serving_model_cache_hits": ("Requests that found the version loaded.", "hits"),
    "serving_model_cache_misses": ("Requests that had to load the version first.", "misses"),
}


class Metrics:
    """The serving process's metrics; ``render`` answers a scrape."""

    def __init__(self) -> None:
        self.directory = multiprocess_dir()
        # Registered in no registry: a scrape builds one (several apps may live in one test process); in
        # multiprocess mode the values live in the directory's files and the scrape collects those instead.
        self.requests = Counter(
            "serving_requests",
            "Requests answered, by protocol (v1: TensorFlow Serving REST, v2: KServe) and status code.",
            ["protocol", "code"],
            registry=None,
        )
        self.latency = Histogram(
            "serving_request_seconds", "Seconds from request to answer.", buckets=LATENCY_BUCKETS, registry=None
        )
        self.batch_rows = Histogram(
            "serving_batch_rows", "Rows per model call (adaptive batching).", buckets=BATCH_BUCKETS, registry=None
        )
        self.predictions: dict[Key, int] = defaultdict(int)  # by VersionSpec.key: (tenant id, model, version)
        self.explanations: dict[Key, int] = defaultdict(int)  # instances explained (:explain), same keys

    def request(self, *, protocol: str, status: int, seconds: float) -> None:
        self.requests.labels(protocol=protocol, code=str(status)).inc()
        self.latency.observe(seconds)

    def forget(self, key: Key) -> None:
        """A version was unloaded: its series go with it."""
        self.predictions.pop(key, None)

    # --- per-version series ----------------------------------------------------------------------------------

    def snapshot(self, cache: ModelCache, explainers: Explainers | None = None) -> dict[str, Any]:
        """What this process holds now, per loaded version and in all (plain JSON).

        Explanations are counted per version while the version is loaded for predictions or for explaining
        (a version may be explained without being loaded for predictions); then their series go too.
        """
        held = {model.spec.key for model in cache.loaded()} | set(explainers.keys() if explainers else ())
        for key in [key for key in self.explanations if key not in held]:
            del self.explanations[key]
        explained = {"\x1f".join(map(str, key)): count for key, count in self.explanations.items()}
        versions = {}
        for model in cache.loaded():
            counters = cache.counters.get(model.spec.key)
            versions["\x1f".join(map(str, model.spec.key))] = {
                "memory_bytes": model.memory_bytes,
                "runtime": model.runtime,
                "predictions": self.predictions.get(model.spec.key, 0),
                **{field: getattr(counters, field, 0) for _, field in _VERSION_COUNTERS.values()},
            }
        return {
            "versions": versions,
            "explanations": explained,
            "explainers_loaded": len(explainers.keys()) if explainers else 0,
            "cache_used_bytes": cache.used_bytes,
            "cache_budget_bytes": cache.budget_bytes,
            "unloads": cache.unloads,
            "tensorflow_loaded": int("tensorflow" in sys.modules),
        }

    def write_snapshot(self, cache: ModelCache, explainers: Explainers | None = None) -> None:
        """Publish this worker's per-version series for the other workers' scrapes (multiprocess mode only)."""
        if self.directory is None:
            return
        target = self.directory / f"{SNAPSHOT_PREFIX}{os.getpid()}.json"
        with tempfile.NamedTemporaryFile("w", dir=self.directory, delete=False, suffix=".tmp") as handle:
            json.dump(self.snapshot(cache, explainers), handle)
        os.replace(handle.name, target)  # readers see the old file or the new one, never half of one

    def _snapshots(self, cache: ModelCache, explainers: Explainers | None) -> list[dict[str, Any]]:
        if self.directory is None:
            return [self.snapshot(cache, explainers)]
        self.write_snapshot(cache, explainers)
        found = []
        for path in self.directory.glob(f"{SNAPSHOT_PREFIX}*.json"):
            pid = int(path.stem.removeprefix(SNAPSHOT_PREFIX))
            if not _alive(pid):  # a worker that exited: its versions are no longer held anywhere
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            with contextlib.suppress(FileNotFoundError, ValueError):
                found.append(json.loads(path.read_text()))
        return found

    def render(self, cache: ModelCache, explainers: Explainers | None = None) -> bytes:
        registry = CollectorRegistry(auto_describe=True)
        if self.directory is not None:
            MultiProcessCollector(registry, path=str(self.directory))
        else:
            for collector in (self.requests, self.latency, self.batch_rows):
                registry.register(collector)
        registry.register(_VersionCollector(self._snapshots(cache, explainers)))
        return generate_latest(registry)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _VersionCollector:
    """Per-version and per-process gauges from the workers' snapshots, added up across workers."""

    def __init__(self, snapshots: list[dict[str, Any]]) -> None:
        self.snapshots = snapshots

    def collect(self):
        memory = GaugeMetricFamily(
            "serving_model_memory_bytes",
            "Memory a loaded version takes (process growth while loading).",
            labels=MODEL_LABELS,
        )
        runtime = GaugeMetricFamily(
            "serving_model_runtime",
            "Processes holding the version, by the runtime that answers it (onnxruntime or tensorflow).",
            labels=(*MODEL_LABELS, "runtime"),
        )
        predictions = CounterMetricFamily(
            "serving_predictions", "Instances predicted by a loaded version.", labels=MODEL_LABELS
        )
        explanations = CounterMetricFamily(
            "serving_explanations",
            "Instances explained (:explain) by a version loaded for predictions or explaining.",
            labels=MODEL_LABELS,
        )
        counters = {
            name: CounterMetricFamily(name, text, labels=MODEL_LABELS) for name, (text, _) in _VERSION_COUNTERS.items()
        }
        totals: dict[tuple[str, tuple[str, ...]], float] = defaultdict(float)
        for snapshot in self.snapshots:
            for joined, values in snapshot["versions"].items():
                labels = tuple(joined.split("\x1f"))
                totals[("memory", labels)] += values["memory_bytes"]
                totals[("runtime", (*labels, values["runtime"]))] += 1
                totals[("predictions", labels)] += values["predictions"]
                for name, (_, field) in _VERSION_COUNTERS.items():
                    totals[(name, labels)] += values.get(field, 0)
            for joined, count in snapshot.get("explanations", {}).items():
                totals[("explanations", tuple(joined.split("\x1f")))] += count
        families = {
            "memory": memory,
            "runtime": runtime,
            "predictions": predictions,
            "explanations": explanations,
            **counters,
        }
        for (family, labels), value in sorted(totals.items()):
            families[family].add_metric(list(labels), value)
        yield from families.values()
        yield CounterMetricFamily(
            "serving_model_unloads",
            "Versions unloaded (evicted for memory or no longer routed to), by the workers alive now.",
            value=sum(snapshot["unloads"] for snapshot in self.snapshots),
        )
        for name, text in (
            ("explainers_loaded", "Versions loaded for explaining (their SavedModels, apart from the model cache)."),
            ("cache_used_bytes", "Memory the loaded versions take, all workers."),
            ("cache_budget_bytes", "The model memory budget, all workers."),
            ("tensorflow_loaded", "Worker processes that imported TensorFlow (a version without a compiled artifact)."),
        ):
            gauge = GaugeMetricFamily(
                f"serving_{name}", text, value=sum(snapshot.get(name, 0) for snapshot in self.snapshots)
            )
            yield gauge
