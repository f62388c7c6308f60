"""Dashboard test helpers: the pages to check, signed-in clients and one tenant with an object of every kind a page
can show."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.test import Client
from django.urls import URLPattern

from dashboard import urls as dashboard_urls
from datasets.models import Dataset
from serving.models import ModelVersion
from tenants.models import User
from tenants.scoping import SESSION_TENANT_KEY
from tests.support.factories import make_job, make_model_version
from training.models import TrainingJob

# Pages come from the URL configuration, so a page added to ``dashboard.urls`` is checked without editing a test.
PAGES = [p for p in dashboard_urls.urlpatterns if isinstance(p, URLPattern)]
# Pages that are not a tenant's (signing in and out, choosing a tenant), and tenant URLs that answer something
# other than a page (the JSON proxy, a download, a config as text), tested apart.
NOT_TENANT_PAGES = {"login", "logout", "switch-tenant"}
NOT_HTML = {"model-try", "version-download", "model-export"}
TENANT_PAGES = [p for p in PAGES if p.name not in NOT_TENANT_PAGES]
HTML_PAGES = [p for p in TENANT_PAGES if p.name not in NOT_HTML]

BINARY_METRICS = {
    "task": "binary",
    "auc": 0.91,
    "accuracy": 0.85,
    "log_loss": 0.33,
    "roc_curve": [[0.0, 0.0, 1.0], [0.1, 0.6, 0.7], [0.3, 0.9, 0.4], [1.0, 1.0, 0.0]],
}
MULTICLASS_METRICS = {
    "task": "multiclass",
    "accuracy": 0.7,
    "macro_f1": 0.66,
    "labels": ["neg", "pos"],
    "confusion_matrix": [[8, 2], [4, 6]],
    "per_class": {"neg": {"precision": 0.67, "recall": 0.8, "f1": 0.73, "support": 10}},
}


def signed_in(user: User, tenant=None) -> Client:
    client = Client()
    client.force_login(user)
    if tenant is not None:
        session = client.session
        session[SESSION_TENANT_KEY] = str(tenant.pk)
        session.save()
    return client


@dataclass
class TenantObjects:
    dataset: Dataset
    job: TrainingJob
    version: ModelVersion
    classifier: ModelVersion

    def url_kwargs(self) -> dict[str, dict[str, object]]:
        """Values for every URL keyword a dashboard page takes, pointing at this tenant's objects."""
        return {
            "dataset_id": {"dataset_id": self.dataset.pk},
            "job_id": {"job_id": self.job.pk},
            "name": {"name": self.version.model.name},
            "version": {"name": self.version.model.name, "version": self.version.version},
        }


def bystander(tenant) -> dict:
    """Rows of a tenant that must stay untouched while another tenant's work runs (its job already ended, so
    a worker has nothing of its own to do), as ``tests.support.isolation.tenant_rows`` sees them."""
    from tests.support.isolation import tenant_rows
    from training import services as job_services

    objects = tenant_objects(tenant)
    job_services.cancel_job(tenant=tenant, job_id=objects.job.pk)
    return tenant_rows(tenant)


def tenant_objects(tenant) -> TenantObjects:
    job = make_job(tenant)
    version = make_model_version(tenant, name="ctr")
    ModelVersion.objects.filter(pk=version.pk).update(metrics=BINARY_METRICS, dataset=job.dataset)
    classifier = make_model_version(tenant, name="intent")
    ModelVersion.objects.filter(pk=classifier.pk).update(metrics=MULTICLASS_METRICS)
    version.refresh_from_db()
    return TenantObjects(dataset=job.dataset, job=job, version=version, classifier=classifier)


@dataclass
class ServingCall:
    path: str
    authorization: str
    body: bytes


@contextmanager
def stand_in_serving(status: int, answer: dict | bytes, *, delay: float = 0.0):
    """An HTTP server on a free loopback port that answers every POST with ``status`` and ``answer`` (after
    ``delay`` seconds), recording each request: the serving process's place for a verb it does not have yet,
    reached through ``SERVING_URL`` exactly as the real one is. Yields (base URL, the calls received)."""
    calls: list[ServingCall] = []
    payload = answer if isinstance(answer, bytes) else json.dumps(answer).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            calls.append(ServingCall(self.path, self.headers.get("Authorization", ""), body))
            time.sleep(delay)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", calls
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
