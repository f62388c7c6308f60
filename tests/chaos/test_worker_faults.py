"""Faults in training: the process running a job killed with SIGKILL mid-epoch, twice in a row on the same job.

What must hold afterwards: the job resumes from its last checkpoint each
time and succeeds once, every epoch is recorded once, exactly one version is
published (complete, its files matching the manifest), and another tenant's
rows are untouched. Only processes this test started are killed, by id.
"""

from __future__ import annotations

import os
import signal

import pytest

from core import storage
from serving.models import ModelVersion
from tests.support.isolation import tenant_rows
from tests.support.jobs import ctr_dataset, job_state, submit, wait_for
from tests.support.workers import celery_worker
from training.models import JobLogLine, JobMetric, TrainingJob

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]
SLOW_CTR = {"epochs": 6, "batch_size": 8, "max_len": 30, "embedding_dim": 16, "conv_filters": 16, "lstm_units": 16}


def kill_the_training_process(job_id: str, after_epoch: int) -> int:
    wait_for(
        lambda: JobLogLine.objects.filter(job_id=job_id, message__startswith=f"epoch {after_epoch}/").exists(),
        240,
        f"no epoch {after_epoch}",
    )
    victim = int(job_state(job_id).worker.rpartition(":")[2])
    os.kill(victim, signal.SIGKILL)
    return victim


def test_a_job_killed_twice_mid_training_resumes_and_publishes_once(api_a, tenant_a, tenant_b):
    from tests.support.dashboard import bystander

    b_before = bystander(tenant_b.tenant)
    with celery_worker("gpu,cpu,default") as (worker, _):
        dataset_id = ctr_dataset(api_a, 600)
        job = submit(api_a, dataset_id, params=SLOW_CTR).json()
        first = kill_the_training_process(job["id"], after_epoch=2)
        second = kill_the_training_process(job["id"], after_epoch=4)
        assert len({first, second, worker.pid}) == 3  # two different pool children died; the worker lived on
        done = wait_for(
            lambda: (j := job_state(job["id"])).status in TrainingJob.TERMINAL and j, 300, "job did not finish"
        )
    assert done.status == "succeeded", done.error_message + done.error_traceback[-2000:]
    assert done.attempts == 3
    assert list(JobMetric.objects.filter(job=done).values_list("epoch", flat=True)) == [1, 2, 3, 4, 5, 6]
    messages = list(JobLogLine.objects.filter(job=done).values_list("message", flat=True))
    resumed = [int(m.split()[-1]) for m in messages if m.startswith("resuming from the checkpoint after epoch")]
    assert len(resumed) == 2 and resumed[0] >= 2 and resumed[1] >= 4, messages
    versions = ModelVersion.objects.for_tenant(tenant_a.tenant).filter(model__name="ctr")
    assert [(v.version, v.status) for v in versions] == [(1, "ready")]
    version = versions.get()
    for name, described in version.manifest["files"].items():  # complete, and what the manifest says
        assert storage.head(version.object_prefix + name)["ContentLength"] == described["size"]
    assert tenant_rows(tenant_b.tenant) == b_before
