"""``manage.py compile_versions``: a version published before compiled serving is compiled from its job's last
checkpoint, checked by the parity gate against its own SavedModel, and served by ONNX Runtime from then on."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
from django.core.management import call_command

from core import storage
from serving.models import ModelVersion
from tests.support.jobs import ready_dataset, sample_csv, submit_job
from tests.support.serving import publish_model
from training.compiled import compiled_files
from training.trainer.run import checkpoint_prefix, run_job

pytestmark = pytest.mark.django_db

COMPILED_FIELDS = ("runtime", "runtime_reason", "compiled", "parity")


def _as_published_before_compiled_serving(version: ModelVersion) -> None:
    """Strip the compiled artifact from a version, in storage and in its manifest, as older versions are."""
    manifest = {k: v for k, v in version.manifest.items() if k not in COMPILED_FIELDS}
    for name in [n for n in manifest["files"] if n.startswith("compiled/")]:
        storage.delete_key(version.object_prefix + name)
        del manifest["files"][name]
    version.manifest = manifest
    version.save(update_fields=["manifest"])


def _command(*args: str) -> str:
    out = io.StringIO()
    call_command("compile_versions", *args, stdout=out)
    return out.getvalue()


def test_an_older_version_is_compiled_from_its_checkpoint(api_a, tenant_a):
    job = submit_job(api_a, ready_dataset(api_a, sample_csv("ctr", 300), label="clicked")).json()
    run_job(job_id=job["id"], worker="test")
    version = ModelVersion.objects.get(job_id=job["id"])
    _as_published_before_compiled_serving(version)
    assert api_a.get("/api/v1/models/ctr/versions/1").json()["serving"]["runtime"] == "tensorflow"
    label = f"{tenant_a.tenant.slug}/ctr/1"
    assert _command("--dry-run") == f"{label}: would compile\ncompiled 0, left on TensorFlow 0\n"

    output = _command()

    assert output.startswith(f"{label}: onnxruntime (parity ") and output.endswith("compiled 1, left on TensorFlow 0\n")
    version.refresh_from_db()
    names = compiled_files(version.manifest)
    assert names == ("compiled/model.onnx", "compiled/preprocess.json")
    for name in names:  # uploaded, and listed with the sha256 serving verifies
        stored = storage.get_bytes(version.object_prefix + name)
        assert hashlib.sha256(stored).hexdigest() == version.manifest["files"][name]["sha256"]
    assert version.manifest["parity"]["passed"]
    stored = json.loads(storage.get_bytes(version.object_prefix + "manifest.json"))
    assert stored["runtime"] == "onnxruntime" and stored["files"] == version.manifest["files"]
    assert version.size_bytes == sum(f["size"] for f in version.manifest["files"].values())
    assert api_a.get("/api/v1/models/ctr/versions/1").json()["serving"]["runtime"] == "onnxruntime"
    assert _command() == "compiled 0, left on TensorFlow 0\n"  # nothing left to do


def test_a_version_without_a_checkpoint_stays_on_tensorflow_and_says_why(api_a, tenant_a):
    job = submit_job(api_a, ready_dataset(api_a, sample_csv("ctr", 300), label="clicked")).json()
    run_job(job_id=job["id"], worker="test")
    version = ModelVersion.objects.get(job_id=job["id"])
    _as_published_before_compiled_serving(version)
    storage.delete_prefix(checkpoint_prefix(version.job))

    assert _command().endswith(
        "tensorflow (not compiled: the job kept no checkpoint)\ncompiled 0, left on TensorFlow 1\n"
    )
    version.refresh_from_db()
    assert version.manifest["runtime_reason"] == "not compiled: the job kept no checkpoint"
    assert _command() == "compiled 0, left on TensorFlow 0\n"  # a refused version is not retried unless asked
    assert "left on TensorFlow 1" in _command("--retry-failed")


def test_a_version_with_no_job_is_left_alone(tenant_a):
    publish_model(tenant_a.tenant, name="orphan")
    assert _command().endswith("tensorflow (not compiled: the version is not ready or has no job)\n"
                               "compiled 0, left on TensorFlow 1\n")  # fmt: skip
