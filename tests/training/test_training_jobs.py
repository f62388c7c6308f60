"""Training jobs: submission checks, fair dispatch, and a real Keras run published to S3."""

from __future__ import annotations

import io
import json

import pytest

from core import storage
from datasets import services
from datasets.sample_data import write_csv
from serving.models import ModelVersion
from tests.conftest import client_for
from tests.support.datasets import upload
from tests.support.factories import make_tenant
from tests.support.jobs import capture_tasks, job_ids, submit
from training import services as job_services
from training.models import TrainingJob
from training.trainer.run import run_job

pytestmark = pytest.mark.django_db


def ready_dataset(client, kind: str, rows: int, label: str, seed: int = 0) -> str:
    out = io.StringIO()
    write_csv(kind, rows, out, seed=seed)
    body = upload(client, out.getvalue(), name=kind, label_column=label).json()
    services.validate_dataset(dataset_id=body["id"])
    return body["id"]


def test_templates_are_listed_with_schemas(api_a):
    templates = {t["name"]: t for t in api_a.get("/api/v1/templates").json()}
    assert set(templates) == {"sequence_ctr", "text_classifier", "tabular_classifier"}
    ctr = templates["sequence_ctr"]
    assert ctr["params_schema"]["properties"]["embedding_dim"]["default"] == 128
    assert ctr["params_schema"]["properties"]["lstm_units"]["default"] == 128
    assert ctr["columns"]["feature_types"] == ["id_sequence"]


def test_sequence_ctr_trains_and_publishes(api_a, tenant_a):
    dataset_id = ready_dataset(api_a, "ctr", 400, "clicked")
    response = submit(api_a, dataset_id)
    assert response.status_code == 201, response.json()
    job = response.json()
    assert job["status"] == "queued" and job["feature_columns"] == ["item_sequence"]

    run_job(job_id=job["id"], worker="test-worker")
    done = api_a.get(f"/api/v1/jobs/{job['id']}").json()
    assert done["status"] == "succeeded", done["error_message"]
    assert done["model_version"] == 1 and done["attempts"] == 1
    assert 0 <= done["metrics"]["auc"] <= 1 and len(done["metrics"]["roc_curve"]) == 101
    assert "error_traceback" not in done

    series = api_a.get(f"/api/v1/jobs/{job['id']}/metrics").json()["epochs"]
    assert [row["epoch"] for row in series] == [1, 2]
    assert {"loss", "auc", "val_loss", "val_auc"} <= set(series[0])
    lines = [line["message"] for line in api_a.get(f"/api/v1/jobs/{job['id']}/logs").json()["lines"]]
    assert any("published ctr v1" in line for line in lines)

    version = ModelVersion.objects.get(tenant=tenant_a.tenant, model__name="ctr", version=1)
    assert version.status == "ready"
    prefix = f"tenants/{tenant_a.tenant.id}/models/ctr/1/"
    assert version.object_prefix == prefix
    manifest = json.loads(storage.get_bytes(prefix + "manifest.json"))
    assert "saved_model.pb" in manifest["files"]
    assert manifest["dataset"]["id"] == dataset_id and manifest["label_names"] == ["0", "1"]
    assert manifest["signature"]["inputs"]["item_sequence"]["dtype"] == "string"
    for relative, meta in manifest["files"].items():
        assert storage.head(prefix + relative)["ContentLength"] == meta["size"]
    # Compiled for serving, the gate run on the job's own held-out rows plus edge cases.
    assert manifest["runtime"] == "onnxruntime" and manifest["parity"]["passed"]
    assert manifest["parity"]["rows"] > 7 and manifest["parity"]["max_abs_difference"] <= 1e-5
    assert {"compiled/model.onnx", "compiled/preprocess.json"} <= set(manifest["files"])
    assert any("served by onnxruntime" in line for line in lines)
    registered = api_a.get("/api/v1/models/ctr/versions/1").json()
    assert registered["serving"]["runtime"] == "onnxruntime"
    assert registered["lineage"]["dataset"] == dataset_id and registered["lineage"]["job"] == job["id"]
    assert registered["lineage"]["params"]["epochs"] == 2


@pytest.mark.parametrize(
    "overrides, code",
    [
        ({"template": "gpt"}, "unknown_template"),
        ({"model_name": "Bad Name!"}, "invalid_model_name"),
        ({"label_column": "nope"}, "unknown_column"),
        ({"label_column": "user_id"}, "wrong_column_type"),
        ({"params": {"epochs": 0}}, "invalid_params"),
        ({"params": {"dropout": 0.5}}, "invalid_params"),
        ({"feature_columns": ["user_id"]}, "wrong_column_type"),
        ({"validation_split": 0.9}, "invalid_validation_split"),
        ({"dataset": "00000000-0000-0000-0000-000000000000"}, "unknown_dataset"),
        ({"surprise": True}, "surprise"),
    ],
)
def test_bad_jobs_are_refused_before_queueing(api_a, overrides, code):
    dataset_id = ready_dataset(api_a, "ctr", 60, "clicked")
    response = submit(api_a, dataset_id, **overrides)
    assert 400 <= response.status_code < 500
    error = response.json()["error"]
    assert error["code"] == code or code in error["details"], error
    assert TrainingJob.objects.count() == 0


def test_another_tenants_dataset_is_unknown(api_a, tenant_b):
    dataset_id = ready_dataset(api_a, "ctr", 60, "clicked")
    response = submit(client_for(tenant_b.raw_key), dataset_id)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_dataset"


def test_dataset_not_ready_and_in_use(api_a):
    out = io.StringIO()
    write_csv("ctr", 60, out)
    pending = upload(api_a, out.getvalue(), name="pending", label_column="clicked").json()
    assert submit(api_a, pending["id"]).status_code == 409
    services.validate_dataset(dataset_id=pending["id"])
    assert submit(api_a, pending["id"]).status_code == 201
    response = api_a.delete(f"/api/v1/datasets/{pending['id']}")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "dataset_in_use"


def test_compute_quota(api_a, tenant_a):
    dataset_id = ready_dataset(api_a, "ctr", 60, "clicked")
    plan = tenant_a.tenant.plan
    plan.compute_seconds_per_month = 10
    plan.save()
    first = submit(api_a, dataset_id).json()
    TrainingJob.objects.filter(pk=first["id"]).update(compute_seconds=11)
    response = submit(api_a, dataset_id)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "compute_quota_exceeded"


def test_cancel_a_queued_job(api_a):
    dataset_id = ready_dataset(api_a, "ctr", 60, "clicked")
    job = submit(api_a, dataset_id).json()
    response = api_a.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert api_a.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 409
    run_job(job_id=job["id"], worker="late-worker")  # a message already on its way does nothing
    assert TrainingJob.objects.get(pk=job["id"]).status == "cancelled"


def test_dispatch_is_fair_and_respects_concurrency(monkeypatch):
    sent = capture_tasks(monkeypatch, job_services.TRAIN_MODEL)
    busy, other = make_tenant("Busy"), make_tenant("Other")
    busy_client, other_client = client_for(busy.raw_key), client_for(other.raw_key)
    busy_data = ready_dataset(busy_client, "ctr", 60, "clicked")
    other_data = ready_dataset(other_client, "ctr", 60, "clicked")
    # Small runtime budgets: fifty jobs at the default budget would not fit in the plan's monthly compute.
    busy_jobs = [submit(busy_client, busy_data, max_runtime_seconds=60).json()["id"] for _ in range(50)]
    other_job = submit(other_client, other_data).json()["id"]

    first = job_services.dispatch_queued_jobs()
    limit = busy.tenant.plan.max_concurrent_jobs
    assert other_job in first  # not behind the busy tenant's fifty
    assert len([j for j in first if j in busy_jobs]) == limit
    assert first.index(other_job) <= 1
    assert job_services.dispatch_queued_jobs() == []  # nothing more until a slot frees

    TrainingJob.objects.filter(pk=first[0]).update(status="succeeded")
    again = job_services.dispatch_queued_jobs()
    assert len(again) == (1 if first[0] in busy_jobs else 0)
    assert job_ids(sent) == first + again


def test_isolation_of_job_routes_covered():
    from tests.support.routes import api_routes

    names = {route.name for route in api_routes()}
    assert {"job-list", "job-detail", "job-cancel", "job-metrics", "job-logs", "templates"} <= names


@pytest.mark.parametrize(
    "kind, template, label, params",
    [
        ("sentiment", "text_classifier", "sentiment", {"epochs": 1, "embedding_dim": 8, "max_tokens": 500}),
        ("intent", "text_classifier", "intent", {"epochs": 1, "encoder": "bilstm", "lstm_units": 4}),
        ("tabular", "tabular_classifier", "defaulted", {"epochs": 1, "hidden_units": [8]}),
    ],
)
def test_other_templates_train_and_publish(api_a, tenant_a, kind, template, label, params):
    dataset_id = ready_dataset(api_a, kind, 200, label)
    features = (
        {"feature_columns": ["age", "income", "debt_ratio", "employment", "late_payments"]}
        if template == "tabular_classifier"
        else {}
    )
    response = submit(
        api_a, dataset_id, template=template, model_name=kind, label_column=label, params=params, **features
    )
    assert response.status_code == 201, response.json()
    run_job(job_id=response.json()["id"], worker="test-worker")
    job = TrainingJob.objects.get(pk=response.json()["id"])
    assert job.status == "succeeded", job.error_traceback[-3000:]
    assert job.metrics["task"] == ("binary" if kind == "tabular" else "multiclass")
    if kind == "tabular":
        assert 0 <= job.metrics["auc"] <= 1
    manifest = ModelVersion.objects.get(job=job).manifest
    assert len(manifest["label_names"]) == len(job.metrics["confusion_matrix"])
    assert set(manifest["signature"]["inputs"]) == set(job.feature_columns)
    assert manifest["runtime"] == "onnxruntime", manifest.get("runtime_reason")
    assert manifest["parity"]["passed"] and manifest["parity"]["labels_agree"] == manifest["parity"]["rows"]


def test_an_attempt_presumed_dead_stops_when_it_finds_a_newer_one(api_a, settings, monkeypatch):
    """A worker whose heartbeats were lost (its job requeued and claimed again) but that is still alive must stop
    at its next heartbeat and write no checkpoint: two runs must never train one job."""
    from datetime import timedelta

    from django.utils import timezone

    from training.trainer.run import Stopped, save_checkpoint

    capture_tasks(monkeypatch, job_services.DISPATCH_JOBS)
    dataset_id = ready_dataset(api_a, "ctr", 60, "clicked")
    job_id = submit(api_a, dataset_id).json()["id"]
    TrainingJob.objects.filter(pk=job_id).update(dispatched_at=timezone.now())
    old = job_services.claim_job(job_id=job_id, worker="old:1")
    assert old is not None and not job_services.superseded(job=old)
    assert job_services.heartbeat(job=old, progress={"epoch": 1}) == "running"
    long_ago = timezone.now() - timedelta(seconds=settings.TRAINING_HEARTBEAT_TIMEOUT_SECONDS + 5)
    TrainingJob.objects.filter(pk=job_id).update(heartbeat_at=long_ago)
    assert job_services.requeue_stale_jobs() == [job_id]
    assert not job_services.superseded(job=old)  # requeued, not yet claimed again
    TrainingJob.objects.filter(pk=job_id).update(dispatched_at=timezone.now())
    new = job_services.claim_job(job_id=job_id, worker="new:1")
    assert new is not None and new.attempts == old.attempts + 1

    assert job_services.superseded(job=old) and not job_services.superseded(job=new)
    assert job_services.heartbeat(job=old, progress={"epoch": 2}) == job_services.SUPERSEDED
    assert job_services.heartbeat(job=new, progress={"epoch": 1}) == "running"
    with pytest.raises(Stopped) as stopped:
        save_checkpoint(old, model=None, epoch=2)
    assert stopped.value.code == job_services.SUPERSEDED
    job = TrainingJob.objects.get(pk=job_id)
    assert job.status == "running" and job.worker == new.worker and job.progress == {"epoch": 1}


def test_stale_jobs_are_requeued_then_failed(api_a, settings, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    capture_tasks(monkeypatch, job_services.DISPATCH_JOBS)
    dataset_id = ready_dataset(api_a, "ctr", 60, "clicked")
    job_id = submit(api_a, dataset_id).json()["id"]
    long_ago = timezone.now() - timedelta(seconds=settings.TRAINING_HEARTBEAT_TIMEOUT_SECONDS + 5)
    TrainingJob.objects.filter(pk=job_id).update(status="running", attempts=1, heartbeat_at=long_ago)
    assert job_services.requeue_stale_jobs() == [job_id]
    job = TrainingJob.objects.get(pk=job_id)
    assert job.status == "queued" and job.dispatched_at is None

    TrainingJob.objects.filter(pk=job_id).update(status="running", attempts=3, heartbeat_at=long_ago)
    assert job_services.requeue_stale_jobs() == []
    job = TrainingJob.objects.get(pk=job_id)
    assert job.status == "failed" and "stopped responding" in job.error_message

    # A fresh heartbeat is left alone, and a message for a healthy running job does not start it twice.
    TrainingJob.objects.filter(pk=job_id).update(status="running", attempts=1, heartbeat_at=timezone.now())
    assert job_services.requeue_stale_jobs() == []
    assert job_services.claim_job(job_id=job_id, worker="elsewhere:1") is None
