"""Faults in object storage: the S3 server stopped during a dataset upload, during checkpoints and during
publishing, then started again.

The test runs its own SeaweedFS on its own ports (S3 on 28433, every other
port derived from it), points this process and the worker at it, and stops
and starts only that server, by process id, on the same data folder.

What must hold: an upload while storage is down is a retryable 503 that
leaves no dataset behind, and works once storage is back; a job whose
checkpoints or publishing hit the outage still ends ``succeeded`` with each
epoch recorded once; its one version is ready only with every file stored
and matching the manifest; no version is ever visible half-written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading

import pytest
from django.test import override_settings

from core import storage
from core.s3server import start_s3_server
from datasets.models import Dataset
from datasets.sample_data import write_csv
from serving.models import ModelVersion
from tests.support.chaos import CHAOS_S3_PORT
from tests.support.datasets import upload
from tests.support.jobs import job_state, submit, wait_for
from tests.support.workers import ROOT, celery_worker
from training.models import JobLogLine, JobMetric, TrainingJob

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]
PARAMS = {"epochs": 6, "batch_size": 8, "max_len": 30, "embedding_dim": 16, "conv_filters": 16, "lstm_units": 16}


class OwnS3:
    def __init__(self) -> None:
        from django.conf import settings

        self.folder = ROOT / "var" / "test" / "chaos-s3"
        shutil.rmtree(self.folder, ignore_errors=True)
        self.keys = settings.S3_ACCESS_KEY_ID, settings.S3_SECRET_ACCESS_KEY
        self.server = None

    def start(self) -> None:
        self.server = start_s3_server(
            data_dir=self.folder, access_key=self.keys[0], secret_key=self.keys[1], s3_port=CHAOS_S3_PORT
        )

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@contextlib.contextmanager
def storage_at(url: str):
    saved = os.environ.get("S3_ENDPOINT_URL")
    os.environ["S3_ENDPOINT_URL"] = url  # for the worker this test starts
    try:
        with override_settings(S3_ENDPOINT_URL=url):
            storage.client.cache_clear()
            storage.ensure_bucket()
            yield
    finally:
        os.environ["S3_ENDPOINT_URL"] = saved or ""
        if saved is None:
            del os.environ["S3_ENDPOINT_URL"]
        storage.client.cache_clear()


def ctr_csv(rows: int) -> str:
    import io

    out = io.StringIO()
    write_csv("ctr", rows, out, seed=5)
    return out.getvalue()


def test_storage_outages_during_upload_checkpoints_and_publishing(api_a, tenant_a):
    s3 = OwnS3()
    s3.start()
    try:
        with storage_at(s3.server.endpoint_url), celery_worker("gpu,cpu,default"):
            # Upload while storage is down: a retryable 503, and nothing left behind.
            s3.stop()
            refused = upload(api_a, ctr_csv(300), name="clicks", label_column="clicked")
            assert refused.status_code == 503, refused.content
            assert refused.json()["error"]["code"] == "storage_unavailable" and "Retry-After" in refused
            assert not Dataset.objects.for_tenant(tenant_a.tenant).exists()
            s3.start()
            stored = upload(api_a, ctr_csv(600), name="clicks", label_column="clicked")
            assert stored.status_code == 201, stored.content
            dataset_id = stored.json()["id"]
            wait_for(lambda: Dataset.objects.get(pk=dataset_id).status == "ready", 60, "not validated")

            # Checkpoints: storage goes away after the second epoch for a while.
            job = submit(api_a, dataset_id, params=PARAMS).json()
            wait_for(
                lambda: JobLogLine.objects.filter(job_id=job["id"], message__startswith="epoch 2/").exists(),
                240,
                "no second epoch",
            )
            s3.stop()
            threading.Event().wait(8)
            s3.start()
            first = wait_for(lambda: (j := job_state(job["id"])).status in TrainingJob.TERMINAL and j, 300, "stuck")

            # Publishing: storage goes away as soon as the model is evaluated (publishing comes next).
            second = submit(api_a, dataset_id, params=PARAMS, model_name="ctr2").json()
            wait_for(
                lambda: JobLogLine.objects.filter(job_id=second["id"], message__startswith="evaluated").exists(),
                300,
                "never evaluated",
            )
            s3.stop()
            threading.Event().wait(8)
            s3.start()
            last = wait_for(lambda: (j := job_state(second["id"])).status in TrainingJob.TERMINAL and j, 300, "stuck")
            for done in (first, last):
                assert done.status == "succeeded", (done.status, done.error_message, done.error_traceback[-1500:])
                assert list(JobMetric.objects.filter(job=done).values_list("epoch", flat=True)) == [1, 2, 3, 4, 5, 6]
                version = ModelVersion.objects.for_tenant(tenant_a.tenant).get(model__name=done.model_name)
                assert version.status == "ready" and version.version == 1
                for name, described in version.manifest["files"].items():
                    head = storage.head(version.object_prefix + name)
                    assert head is not None and head["ContentLength"] == described["size"], name
                assert storage.head(version.object_prefix + "manifest.json") is not None
    finally:
        s3.stop()
