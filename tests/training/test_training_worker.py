"""Training through real Celery worker processes: end to end, a killed worker resumes, a running job cancels."""

from __future__ import annotations

import os
import signal

import pytest

from core import storage
from tests.support.jobs import ctr_dataset, job_state, submit, wait_for
from tests.support.workers import celery_worker
from training.models import JobLogLine, JobMetric, TrainingJob

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SLOW_CTR = {"epochs": 6, "batch_size": 8, "max_len": 30, "embedding_dim": 16, "conv_filters": 16, "lstm_units": 16}


def test_worker_trains_publishes_and_a_killed_worker_resumes(api_a, tenant_a):
    with celery_worker("gpu,cpu,default") as (worker, _):
        dataset_id = ctr_dataset(api_a, 600)
        job = submit(api_a, dataset_id, params=SLOW_CTR).json()
        # Kill the process running the job once two epochs are checkpointed (logged after the checkpoint).
        wait_for(
            lambda: JobLogLine.objects.filter(job_id=job["id"], message__startswith="epoch 2/").exists(),
            180,
            "no second epoch",
        )
        victim = int(job_state(job["id"]).worker.rpartition(":")[2])
        assert victim != worker.pid
        os.kill(victim, signal.SIGKILL)
        done = wait_for(
            lambda: (j := job_state(job["id"])).status in TrainingJob.TERMINAL and j, 240, "job did not finish"
        )
    messages = [line["message"] for line in api_a.get(f"/api/v1/jobs/{done.id}/logs").json()["lines"]]
    assert done.status == "succeeded", done.error_message + done.error_traceback[-2000:]
    assert done.attempts == 2, messages
    assert list(JobMetric.objects.filter(job=done).values_list("epoch", flat=True)) == [1, 2, 3, 4, 5, 6]
    resumed = [m for m in messages if m.startswith("resuming from the checkpoint after epoch")]
    assert resumed and int(resumed[0].split()[-1]) >= 2, messages
    assert done.model_version == 1
    assert storage.head(f"tenants/{tenant_a.tenant.id}/models/ctr/1/manifest.json") is not None


def test_cancel_a_running_job(api_a, tenant_a):
    with celery_worker("gpu,cpu,default"):
        dataset_id = ctr_dataset(api_a, 600)
        job = submit(api_a, dataset_id, params=SLOW_CTR | {"epochs": 50}).json()
        wait_for(lambda: JobMetric.objects.filter(job_id=job["id"], epoch=1).exists(), 180, "never started")
        response = api_a.post(f"/api/v1/jobs/{job['id']}/cancel")
        assert response.status_code == 200 and response.json()["status"] == "cancelling"
        done = wait_for(
            lambda: (j := job_state(job["id"])).status in TrainingJob.TERMINAL and j, 60, "cancel did not land"
        )
    assert done.status == "cancelled"
    assert done.model_version is None
    assert JobMetric.objects.filter(job=done).count() < 50
    prefix = f"tenants/{tenant_a.tenant.id}/jobs/{done.id}/checkpoints/"
    assert storage.head(prefix + "latest.json") is not None  # the last checkpoint is kept
