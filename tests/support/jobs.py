"""Training test helpers: datasets uploaded and validated through the API, and jobs submitted through it."""

from __future__ import annotations

import io

from rest_framework.test import APIClient

from datasets import services
from datasets.sample_data import write_csv

TINY_CTR = {"epochs": 1, "batch_size": 64, "max_len": 10, "embedding_dim": 4, "conv_filters": 4, "lstm_units": 4}


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
