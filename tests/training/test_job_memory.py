"""A job's memory is estimated at submission and held to the plan's per-job limit; data-derived sizes are capped."""

from __future__ import annotations

import pytest

from tests.support.jobs import TINY_CTR, ready_dataset, sample_csv, submit_job
from training import templates
from training.models import TrainingJob
from training.trainer.run import run_job

pytestmark = pytest.mark.django_db


def test_a_19_gib_embedding_is_refused_naming_the_limit(api_a, tenant_a):
    dataset_id = ready_dataset(api_a, sample_csv("ctr", 60), label="clicked")
    response = submit_job(api_a, dataset_id, params={"vocab_size": 5_000_000, "embedding_dim": 1024})
    assert response.status_code == 400
    error = response.json()["error"]
    limit = tenant_a.tenant.plan.max_job_memory_bytes
    assert error["code"] == "job_memory_exceeded"
    assert error["details"]["max_job_memory_bytes"] == limit
    assert error["details"]["estimated_memory_bytes"] > 5_000_000 * 1024 * 4  # at least the embedding's weights
    assert f"{limit / 1024**3:.1f} GiB" in error["message"] and str(limit) in error["message"]
    assert TrainingJob.objects.count() == 0

    # Activations count too: a small model with a huge batch of long sequences.
    big_batch = {"batch_size": 8192, "max_len": 2000, "embedding_dim": 1024, "conv_filters": 1024}
    assert submit_job(api_a, dataset_id, params=big_batch).json()["error"]["code"] == "job_memory_exceeded"


def test_an_accepted_job_carries_its_estimate(api_a, tenant_a):
    dataset_id = ready_dataset(api_a, sample_csv("ctr", 60), label="clicked")
    body = submit_job(api_a, dataset_id).json()
    assert 0 < body["estimated_memory_bytes"] < 10 * 1024**2
    plan = tenant_a.tenant.plan
    assert {q["name"]: q for q in api_a.get("/api/v1/quotas").json()["quotas"]}["job_memory_bytes"]["limit"] == (
        plan.max_job_memory_bytes
    )


def test_one_huge_id_does_not_blow_up_the_vocabulary(api_a, tenant_a, settings):
    settings.TRAINING_MAX_VOCAB_SIZE = 5_000
    rows = [f"{i % 50} {(i * 7) % 50} {(i * 3) % 50},{i % 2}" for i in range(80)]
    rows[5] = "3 9000000000000 4,1"  # one id near 2**43: the vocabulary would be 9 trillion rows
    dataset_id = ready_dataset(api_a, "item_sequence,clicked\n" + "\n".join(rows) + "\n", label="clicked")
    response = submit_job(api_a, dataset_id, params=TINY_CTR)
    assert response.status_code == 201, response.json()
    body = response.json()
    capped = templates.TEMPLATES["sequence_ctr"].estimate_memory(
        body["params"], columns={"item_sequence": {"max_id": 5_000 - 1}}, classes=2
    )[1]
    assert body["estimated_memory_bytes"] == capped

    run_job(job_id=body["id"], worker="gpu-host")
    job = TrainingJob.objects.get(pk=body["id"])
    assert job.status == "succeeded", job.error_traceback[-2000:]
    version = api_a.get("/api/v1/models/ctr/versions/1").json()
    assert version["size_bytes"] < 2 * 1024**2  # 5,002 x 4 embedding, not 9e12 x 4


def test_schema_caps_data_independent_sizes(api_a):
    dataset_id = ready_dataset(api_a, sample_csv("ctr", 60), label="clicked")
    for params in ({"embedding_dim": 4096}, {"vocab_size": 50_000_000}, {"max_len": 100_000}):
        error = submit_job(api_a, dataset_id, params=params).json()["error"]
        assert error["code"] == "invalid_params", (params, error)


@pytest.mark.parametrize(
    "template, params",
    [
        ("sequence_ctr", {"max_len": 12, "embedding_dim": 6, "conv_filters": 5, "conv_kernel": 3, "lstm_units": 7}),
        ("sequence_ctr", {"vocab_size": 300, "max_len": 9, "embedding_dim": 4, "pool_size": 3, "lstm_units": 3}),
        ("text_classifier", {"max_tokens": 300, "embedding_dim": 8, "encoder": "pooling"}),
        ("text_classifier", {"max_tokens": 200, "embedding_dim": 6, "encoder": "bilstm", "lstm_units": 5}),
        ("tabular_classifier", {"hidden_units": [16, 8]}),
        ("tabular_classifier", {"hidden_units": [5]}),
    ],
)
def test_the_estimate_counts_what_keras_builds(template, params):
    """The plain-Python parameter count equals the built Keras model's count_params() (TensorFlow in this test only)."""
    import numpy as np

    from training.trainer import models

    chosen = templates.TEMPLATES[template]
    resolved = chosen.resolve_params(params)
    rng = np.random.default_rng(0)
    if template == "sequence_ctr":
        stats = {"type": "id_sequence", "max_id": 120}
        vocab = templates.derived_vocab_size(params=resolved, column_stats=stats)
        model = models.sequence_ctr(column="items", params=resolved, vocab_size=vocab)
        estimate, _ = chosen.estimate_memory(resolved, columns={"items": stats}, classes=2)
    elif template == "text_classifier":
        texts = np.array([" ".join(f"w{rng.integers(0, 50)}" for _ in range(6)) for _ in range(100)], dtype=object)
        model = models.text_classifier(column="text", params=resolved, texts=texts, classes=4)
        estimate, _ = chosen.estimate_memory(resolved, columns={"text": {"type": "text"}}, classes=4)
    else:
        features = {
            "age": rng.integers(18, 80, 200).astype("float32"),
            "income": rng.normal(50, 10, 200).astype("float32"),
            "city": np.array([f"c{i % 7}" for i in range(200)], dtype=object),
            "plan": np.array([f"p{i % 3}" for i in range(200)], dtype=object),
        }
        columns = {"age": "integer", "income": "float", "city": "string", "plan": "string"}
        model = models.tabular_classifier(columns=columns, params=resolved, features=features, classes=3)
        stats = {
            "age": {"type": "integer"},
            "income": {"type": "float"},
            "city": {"type": "string", "distinct": 7},
            "plan": {"type": "string", "distinct": 3},
        }
        estimate, _ = chosen.estimate_memory(resolved, columns=stats, classes=3)
    assert estimate.parameters == model.count_params()
