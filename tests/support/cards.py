"""Versions with the manifest pieces a model card shows (privacy statement, explanation method, global
explanations), made as real rows through the ORM: the card reads rows only, so no training is needed.

The manifests follow the shapes of issue 17's contract (what the trainer writes into ``manifest.json``).
"""

from __future__ import annotations

from django.utils import timezone

from datasets.models import Dataset
from serving.models import ModelVersion
from tests.support.factories import make_dataset, make_job, make_model_version

HOSTILE = "x](javascript:alert(1)) <script>alert(1)</script> | # h\n## injected *b* `c`"
PRIVACY = {
    "mechanism": "DP-SGD: per-example gradients clipped to L2 norm C, Gaussian noise of std sigma*C added to their sum",
    "privacy_unit": "one row of the dataset",
    "adjacency": "add or remove one row",
    "accountant": "PLD (dp-accounting 0.6.0)",
    "sampling": "Poisson: every row joins every step independently with probability q",
    "epsilon": 2.38,
    "delta": 1e-5,
    "epsilon_rdp": 2.6,
    "noise_multiplier": 1.1,
    "clip_norm": 1.0,
    "sample_rate": 0.0043,
    "steps": 3480,
    "epochs": 15,
    "expected_batch_size": 256,
    "covers": "the published model and every checkpoint (each is a prefix of the same run); not the training "
    "loss and validation metrics shown to the tenant",
}
EXPLANATION = {
    "signature": "explain",
    "method": "integrated_gradients",
    "steps": 50,
    "rule": "trapezoidal",
    "baseline": "all-padding sequence (id 0 at every position)",
    "attributed_at": "the embedding layer's output",
    "unit": "id_position",
    "output": "the probability",
}


def global_explanations(features: list[str]) -> dict:
    top = [
        {"feature": name, "mean_abs_attribution": round(0.05 / (i + 1), 4), "count": 60 - i}
        for i, name in enumerate(features)
    ]
    return {
        "method": "mean absolute integrated-gradients attribution over 128 validation rows",
        "rows": 128,
        "unit": "id_position",
        "top": top,
    }


def explained_version(
    tenant, *, name: str = "ctr", version: int = 1, features: list[str] | None = None, dataset: Dataset | None = None
) -> ModelVersion:
    """A ready version trained on a real dataset and job, whose manifest has every piece the card shows."""
    job = make_job(tenant)
    dataset = dataset or job.dataset
    row = make_model_version(tenant, name=name, version=version)
    manifest = {
        "template": "sequence_ctr",
        "task": "binary",
        "input_kind": "id_sequence",
        "params": {"epochs": 3, "batch_size": 256, "max_len": 8},
        "job_id": str(job.pk),
        "dataset": {"id": str(dataset.pk), "sha256": dataset.sha256, "name": dataset.name, "version": dataset.version},
        "feature_columns": ["item_sequence"],
        "label_column": "clicked",
        "label_names": ["0", "1"],
        "signature": {"name": "serving_default", "inputs": {"item_sequence": {"dtype": "string", "shape": [None]}}},
        "privacy": PRIVACY,
        "explanation": EXPLANATION,
        "global_explanations": global_explanations(features or ["12", "85", "3"]),
    }
    ModelVersion.objects.filter(pk=row.pk).update(
        manifest=manifest, job=job, dataset=dataset, published_at=timezone.now(), metrics={"auc": 0.71, "examples": 8}
    )
    row.refresh_from_db()
    return row


def old_version(tenant, *, name: str = "old", version: int = 1) -> ModelVersion:
    """A version as published before the card's pieces existed: a manifest without privacy or explanations, and
    no job or dataset rows left (both deleted)."""
    row = make_model_version(tenant, name=name, version=version)
    manifest = {
        "template": "sequence_ctr",
        "dataset": {"id": "00000000-0000-0000-0000-000000000001", "sha256": "ab" * 32, "name": "gone", "version": 4},
        "feature_columns": ["item_sequence"],
        "label_column": "clicked",
    }
    ModelVersion.objects.filter(pk=row.pk).update(manifest=manifest)
    row.refresh_from_db()
    return row


def pii_dataset(tenant, *, mode: str = "hash") -> Dataset:
    """A dataset with an ``email`` column tagged PII (hashed or dropped before storage, by the real upload)."""
    content = b"item_sequence,email,clicked\n1 2 3,a@example.com,1\n4 5 6,b@example.com,0\n"
    return make_dataset(
        tenant, content=content, name="clicks-pii", label_column="clicked", column_tags={"email": "pii"}, pii_mode=mode
    )


def tabular_version(tenant, *, name: str = "churn") -> ModelVersion:
    """A tabular version (a number column and a text column) with an explain signature, no dataset row."""
    row = make_model_version(tenant, name=name)
    manifest = {
        "template": "tabular_classifier",
        "task": "binary",
        "input_kind": "columns",
        "feature_columns": ["age", "city"],
        "label_column": "churned",
        "label_names": ["no", "yes"],
        "signature": {
            "name": "serving_default",
            "inputs": {
                "age": {"dtype": "float32", "shape": [None, 1]},
                "city": {"dtype": "string", "shape": [None, 1]},
            },
        },
        "explanation": EXPLANATION | {"unit": "feature", "baseline": "each column's training mean or mode"},
        "global_explanations": global_explanations(["city", "age"]) | {"unit": "feature"},
    }
    ModelVersion.objects.filter(pk=row.pk).update(manifest=manifest, template="tabular_classifier")
    row.refresh_from_db()
    return row
