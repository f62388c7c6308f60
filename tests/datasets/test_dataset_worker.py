"""A dataset uploaded through the API is validated by a real Celery worker on the cpu queue."""

import time

import pytest

from datasets.models import Dataset
from tests.support.datasets import CSV, upload
from tests.support.workers import celery_worker


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_worker_validates_an_upload(tenant_a, api_a):
    with celery_worker("cpu"):
        body = upload(api_a, CSV, label_column="clicked").json()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            dataset = Dataset.objects.get(pk=body["id"])
            if dataset.status != "validating":
                break
            time.sleep(0.3)
    assert dataset.status == "ready", dataset.errors
    assert dataset.row_count == 20
