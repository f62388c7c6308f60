"""Faults in PostgreSQL: every connection of the API and of a training worker terminated, repeatedly, while busy.

What must hold: the API answers every request with a success or a
retryable 503 (never a 500), and succeeds again at once; the job in flight
ends ``succeeded`` with each epoch recorded once and one version published;
no row of another tenant changes. Only our own database's backends are
terminated (never other databases'), from a separate control connection.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request

import psycopg2
import pytest
from django.db import InterfaceError, OperationalError, connection

from serving.models import ModelVersion
from tests.support.isolation import tenant_rows
from tests.support.jobs import ctr_dataset, job_state, submit, wait_for
from tests.support.workers import celery_worker
from training.models import JobMetric, TrainingJob

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]
PARAMS = {"epochs": 6, "batch_size": 8, "max_len": 30, "embedding_dim": 16, "conv_filters": 16, "lstm_units": 16}


@pytest.fixture
def postgres():
    if connection.vendor != "postgresql":
        message = "terminating backends needs PostgreSQL (CI runs the suite on it)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    settings = connection.settings_dict
    control = psycopg2.connect(
        dbname=settings["NAME"],
        user=settings["USER"],
        host=settings["HOST"] or "127.0.0.1",
        port=settings["PORT"] or 5432,
    )
    control.autocommit = True
    yield control
    control.close()


def terminate_backends(control) -> int:
    with control.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def current(job_id: str):
    """The job's row, or None while this test's own connection is one of those just terminated."""
    try:
        return job_state(job_id)
    except (OperationalError, InterfaceError):
        connection.close()
        return None


def test_terminated_connections_mid_request_and_mid_training(postgres, live_server, api_a, tenant_a, tenant_b):
    from tests.support.dashboard import bystander

    b_before = bystander(tenant_b.tenant)
    statuses: list[int] = []
    stop = threading.Event()

    def api_client() -> None:
        request = urllib.request.Request(
            live_server.url + "/api/v1/jobs", headers={"Authorization": f"Bearer {tenant_a.raw_key}"}
        )
        while not stop.is_set():
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    json.loads(response.read())
                    statuses.append(response.status)
            except urllib.error.HTTPError as error:
                statuses.append(error.code)

    with celery_worker("gpu,cpu,default"):
        dataset_id = ctr_dataset(api_a, 600)
        job = submit(api_a, dataset_id, params=PARAMS).json()
        wait_for(lambda: (j := current(job["id"])) and j.progress.get("epoch"), 240, "training never started")
        thread = threading.Thread(target=api_client)
        thread.start()
        terminated = 0
        try:
            for _ in range(5):
                time.sleep(1.5)
                terminated += terminate_backends(postgres)
            done = wait_for(
                lambda: (j := current(job["id"])) and j.status in TrainingJob.TERMINAL and j, 300, "job did not finish"
            )
            settled = len(statuses)
            time.sleep(1.0)
        finally:
            stop.set()
            thread.join()
    assert terminated >= 5
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    assert statuses[settled:] and set(statuses[settled:]) == {200}  # healthy again once the database is
    assert done.status == "succeeded", done.error_message + done.error_traceback[-2000:]
    assert list(JobMetric.objects.filter(job=done).values_list("epoch", flat=True)) == [1, 2, 3, 4, 5, 6]
    assert ModelVersion.objects.for_tenant(tenant_a.tenant).filter(model__name="ctr").count() == 1
    assert tenant_rows(tenant_b.tenant) == b_before
