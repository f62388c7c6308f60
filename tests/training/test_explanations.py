"""Explanations exported with each version: the SavedModel's ``explain`` signature and the global explanations.

Each template is trained for real on the sample data (whose signal is known), published, and its published
SavedModel is loaded back from storage: the attributions must add up to the output's change from the baseline
(completeness), the explained predictions must be the served ones, and the global explanations must point at
where the generator put the signal.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from core import storage
from serving.models import ModelVersion
from tests.support.jobs import ready_dataset, sample_csv, submit_job
from training.models import TrainingJob
from training.trainer.run import run_job

pytestmark = pytest.mark.django_db

COMPLETENESS = 0.02  # |sum of attributions - (output - baseline output)|: 50 trapezoids on a smooth network


def train(api, kind: str, rows: int, **job) -> ModelVersion:
    label = {"ctr": "clicked", "sentiment": "sentiment", "intent": "intent", "tabular": "defaulted"}[kind]
    dataset_id = ready_dataset(api, sample_csv(kind, rows), label=label, name=kind)
    response = submit_job(api, dataset_id, model_name=kind, label_column=label, **job)
    assert response.status_code == 201, response.json()
    run_job(job_id=response.json()["id"], worker="test-worker")
    job_row = TrainingJob.objects.get(pk=response.json()["id"])
    assert job_row.status == "succeeded", job_row.error_traceback[-3000:]
    return ModelVersion.objects.get(job=job_row)


def published_signatures(version: ModelVersion):
    """The version's SavedModel as published (downloaded from storage), with its two signatures."""
    import tensorflow as tf

    folder = Path(tempfile.mkdtemp(prefix="explain-test-"))
    for name in version.manifest["files"]:
        if name.startswith("compiled/"):
            continue
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as handle:
            storage.download_stream(version.object_prefix + name, handle)
    saved = tf.saved_model.load(str(folder))
    return saved, saved.signatures["explain"], saved.signatures["serving_default"]


def explained(version: ModelVersion, inputs: dict) -> tuple[dict, np.ndarray]:
    import tensorflow as tf

    _saved, explain, serve = published_signatures(version)
    tensors = {name: tf.constant(values) for name, values in inputs.items()}
    answer = {name: value.numpy() for name, value in explain(**tensors).items()}
    (served,) = serve(**tensors).values()
    return answer, served.numpy()


def assert_complete(answer: dict, served: np.ndarray, *, binary: bool) -> None:
    rows = len(answer["attributions"])
    change = answer["instance_output"] - answer["baseline_output"]
    error = np.abs(answer["attributions"].sum(axis=1) - change)
    assert error.max() <= COMPLETENESS, (error, change)
    np.testing.assert_allclose(answer["predictions"], served, atol=1e-6)
    explained_column = np.zeros(rows, int) if binary else served.argmax(axis=1)
    np.testing.assert_array_equal(answer["output_index"], explained_column)
    np.testing.assert_allclose(answer["instance_output"], served[np.arange(rows), explained_column], atol=1e-6)


def test_sequence_explanations_are_complete_and_find_the_promoted_items(api_a):
    params = {"epochs": 3, "batch_size": 32, "max_len": 20, "embedding_dim": 8, "conv_filters": 8, "lstm_units": 8}
    version = train(api_a, "ctr", 1500, params=params)
    manifest = version.manifest
    assert manifest["explanation"] == manifest["explanation"] | {
        "signature": "explain",
        "method": "integrated_gradients",
        "steps": 50,
        "unit": "id_position",
    }
    histories = ["1 2 3 45 46 47", "200 201 202 203", "", "5 " * 30]
    answer, served = explained(version, {"item_sequence": np.array(histories, dtype=object)})
    assert_complete(answer, served, binary=True)
    assert answer["attributions"].shape == (4, 20) and answer["tokens"].shape == (4, 20)
    # The last ids at the last positions, padding in front with exactly zero attribution.
    assert [t.decode() for t in answer["tokens"][0][-6:]] == ["1", "2", "3", "45", "46", "47"]
    padding = answer["tokens"] == b""
    assert np.all(answer["attributions"][padding] == 0)
    assert np.all(padding[2])  # the empty history is the baseline itself
    assert abs(answer["instance_output"][2] - answer["baseline_output"][2]) < 1e-6

    overall = manifest["global_explanations"]
    assert overall["unit"] == "id_position" and overall["rows"] > 0 and 0 < len(overall["top"]) <= 20
    top = [int(entry["feature"]) for entry in overall["top"][:10]]
    promoted = [item for item in top if 1 <= item <= 30]  # category 0: the generator's promoted items
    assert len(promoted) >= 6, overall["top"]
    scores = [entry["mean_abs_attribution"] for entry in overall["top"]]
    assert scores == sorted(scores, reverse=True)


def test_tabular_explanations_rank_the_informative_columns_first(api_a):
    columns = ["age", "income", "debt_ratio", "employment", "region", "late_payments"]
    version = train(
        api_a,
        "tabular",
        1500,
        template="tabular_classifier",
        feature_columns=columns,
        params={"epochs": 8, "hidden_units": [16], "batch_size": 32},
    )
    inputs = {
        "age": np.array([[30.0], [65.0]], "float32"),
        "income": np.array([[1200.0], [9000.0]], "float32"),
        "debt_ratio": np.array([[0.9], [0.1]], "float32"),
        "employment": np.array([["unemployed"], ["salaried"]], dtype=object),
        "region": np.array([["north"], ["nowhere"]], dtype=object),
        "late_payments": np.array([[5.0], [0.0]], "float32"),
    }
    answer, served = explained(version, inputs)
    assert_complete(answer, served, binary=False)
    assert [t.decode() for t in answer["tokens"][0]] == columns
    ranked = [entry["feature"] for entry in version.manifest["global_explanations"]["top"]]
    assert sorted(ranked) == sorted(columns)
    # The generator's score reads late payments, debt ratio, income and employment; never age or region.
    assert set(ranked[-2:]) == {"age", "region"}, ranked


@pytest.mark.parametrize("encoder", ["pooling", "bilstm"])
def test_text_explanations_are_complete_per_token(api_a, encoder):
    params = {"epochs": 2, "embedding_dim": 8, "max_tokens": 500, "encoder": encoder, "lstm_units": 4}
    version = train(api_a, "intent", 300, template="text_classifier", params=params)
    assert version.manifest["explanation"]["unit"] == "token"
    texts = np.array(["where is my package", "我要退款", "", "how do I change my password now"], dtype=object)
    answer, served = explained(version, {"utterance": texts})
    assert_complete(answer, served, binary=False)
    assert [t.decode() for t in answer["tokens"][0] if t] == ["where", "is", "my", "package"]
    assert [t.decode() for t in answer["tokens"][1] if t] == list("我要退款")  # Chinese is split into characters
    assert not answer["tokens"][2].any() and not answer["attributions"][2].any()
    assert all(entry["count"] >= 1 for entry in version.manifest["global_explanations"]["top"])
