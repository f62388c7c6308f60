"""Training test helpers: datasets uploaded and validated through the API, jobs submitted through it, waiting on
workers, and the tasks services send (recorded instead of sent where a test needs it)."""

from __future__ import annotations

import io
import time
from typing import Any

import pytest
from rest_framework.test import APIClient

from core import queue
from datasets import services
from datasets.sample_data import write_csv
from tests.support.datasets import upload
from training.models import TrainingJob
from training.services import TRAIN_MODEL

TINY_CTR = {"epochs": 1, "batch_size": 64, "max_len": 10, "embedding_dim": 4, "conv_filters": 4, "lstm_units": 4}
# Big enough for a real two-epoch run to learn something, small enough to train in seconds.
SMALL_CTR = {"epochs": 2, "batch_size": 32, "max_len": 20, "embedding_dim": 8, "conv_filters": 8, "lstm_units": 8}


def sample_csv(kind: str, rows: int, *, seed: int = 0) -> str:
    out = io.StringIO()
    write_csv(kind, rows, out, seed=seed)
    return out.getvalue()


def ready_dataset(client: APIClient, content: str | bytes, *, label: str, name: str = "clicks") -> str:
    """Upload ``content`` as CSV through the API and validate it in this process; returns the dataset id."""
    data = content.encode() if isinstance(content, str) else content
    handle = io.BytesIO(data)
    handle.name = f"{name}.csv"
    response = client.post(
        "/api/v1/datasets", {"name": name, "file": handle, "label_column": label}, format="multipart"
    )
    assert response.status_code == 201, response.json()
    dataset_id = response.json()["id"]
    services.validate_dataset(dataset_id=dataset_id)
    return dataset_id


def submit_job(client: APIClient, dataset_id: str, **overrides):
    """``POST /api/v1/jobs`` for a small sequence_ctr job; ``overrides`` replace body fields."""
    body = {
        "dataset": dataset_id,
        "template": "sequence_ctr",
        "model_name": "ctr",
        "label_column": "clicked",
        "params": TINY_CTR,
    } | overrides
    return client.post("/api/v1/jobs", body, format="json")


def submit(client: APIClient, dataset_id: str, **overrides):
    """``POST /api/v1/jobs`` for a sequence_ctr job with ``SMALL_CTR`` params; ``overrides`` replace body fields."""
    return submit_job(client, dataset_id, **({"params": SMALL_CTR} | overrides))


def wait_for(predicate, timeout: float, message: str):
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` seconds pass (fails)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(message)


def ctr_dataset(api: APIClient, rows: int) -> str:
    """A CTR dataset uploaded through the API and validated by a running worker (the test starts one)."""
    out = io.StringIO()
    write_csv("ctr", rows, out, seed=5)
    body = upload(api, out.getvalue(), name="clicks", label_column="clicked").json()
    wait_for(lambda: api.get(f"/api/v1/datasets/{body['id']}").json()["status"] == "ready", 60, "not validated")
    return body["id"]


def job_state(job_id: str) -> TrainingJob:
    return TrainingJob.objects.get(pk=job_id)


def capture_tasks(monkeypatch: pytest.MonkeyPatch, *names: str) -> list[dict[str, Any]]:
    """Record the tasks named ``names`` instead of sending them; every other task still goes to the broker.

    Services send tasks by name through ``core.queue.send`` (looked up when they send, and by
    ``send_on_commit`` too), so patching that one function catches them all. Each record is
    ``{"name": task name, "kwargs": keyword arguments}``, in the order sent.
    """
    captured: list[dict[str, Any]] = []
    real_send = queue.send

    def send(task_name: str, **kwargs: Any) -> None:
        if task_name in names:
            captured.append({"name": task_name, "kwargs": kwargs})
        else:
            real_send(task_name, **kwargs)

    monkeypatch.setattr(queue, "send", send)
    return captured


def job_ids(captured: list[dict[str, Any]]) -> list[str]:
    """The job ids of the ``train_model`` sends among ``captured`` (from ``capture_tasks``), in the order sent."""
    return [task["kwargs"]["job_id"] for task in captured if task["name"] == TRAIN_MODEL]
