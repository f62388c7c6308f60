"""Models that leave: a version's files by presigned URL, one streamed archive, engine configs, alias rollback.

The archive is unpacked and checked against what TensorFlow Serving reads (a numeric version folder holding
``saved_model.pb`` and ``variables/``), then loaded by plain TensorFlow in a process of its own that imports
nothing of the platform, and its answers are compared with the serving process's for the same rows.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import urllib.request

import pytest
import yaml
from django.test import override_settings

from core import storage
from serving.exports import ArchiveIntegrityError
from serving.models import ModelVersion
from tests.support.serving import call, publish_model, serving_server

ROWS = ["1 2 3", "4 5 6 7 8 9 10 11 12", "49"]


@pytest.fixture
def two_versions(tenant_a):
    return [publish_model(tenant_a.tenant, name="clicks", seed=seed) for seed in (1, 2)]


def _archive(api, url: str) -> bytes:
    response = api.get(url)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/gzip"
    return b"".join(response.streaming_content)


def test_files_are_listed_with_presigned_urls_that_match_the_manifest(api_a, two_versions):
    body = api_a.get("/api/v1/models/clicks/versions/1/files").json()
    assert body["model"] == "clicks" and body["version"] == 1 and body["expires_at"]
    paths = [f["path"] for f in body["files"]]
    assert "saved_model.pb" in paths and "variables/variables.index" in paths and paths[-1] == "manifest.json"
    for entry in body["files"]:
        with urllib.request.urlopen(entry["url"], timeout=10) as response:
            data = response.read()
        assert len(data) == entry["size"]
        if entry["sha256"]:
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        else:
            assert json.loads(data)["version"] == 1


@pytest.mark.django_db(transaction=True)
def test_the_archive_is_tf_serving_layout_and_plain_tensorflow_gives_the_served_predictions(tenant_a, tmp_path):
    from tests.conftest import client_for

    publish_model(tenant_a.tenant, name="clicks")
    data = _archive(client_for(tenant_a.raw_key), "/api/v1/models/clicks/versions/1/download")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        names = archive.getnames()
        archive.extractall(tmp_path, filter="data")
    assert all(name.startswith("clicks/1/") for name in names)
    version_folder = tmp_path / "clicks" / "1"
    assert (version_folder / "saved_model.pb").is_file()
    assert sorted(p.name for p in (version_folder / "variables").iterdir()) == [
        "variables.data-00000-of-00001",
        "variables.index",
    ]
    assert json.loads((version_folder / "manifest.json").read_text())["version"] == 1

    script = (
        "import json, sys, tensorflow as tf\n"
        "model = tf.saved_model.load(sys.argv[1])\n"
        "outputs = model.signatures['serving_default'](item_ids=tf.constant(json.loads(sys.argv[2])))\n"
        "(value,) = outputs.values()\n"
        "print(json.dumps(value.numpy().reshape(-1).tolist()))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script, str(version_folder), json.dumps(ROWS)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # not the repository: nothing of the platform on the path
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    plain = json.loads(loaded.stdout.strip().splitlines()[-1])

    with serving_server() as (base, _):
        status, body, _ = call(
            base, "POST", "/v1/models/clicks/versions/1:predict", {"instances": ROWS}, tenant_a.raw_key
        )
    assert status == 200, body
    served = [row["probability"] for row in body["predictions"]]
    assert plain == pytest.approx(served, abs=1e-5)


def test_a_file_changed_in_storage_breaks_the_stream_instead_of_shipping_it(api_a, two_versions):
    version = two_versions[0]
    storage.put_bytes(version.object_prefix + "variables/variables.index", b"not the trained weights")
    response = api_a.get("/api/v1/models/clicks/versions/1/download")
    assert response.status_code == 200  # the headers went out before the file was read
    with pytest.raises(ArchiveIntegrityError):
        b"".join(response.streaming_content)


def test_archives_over_the_limit_point_to_the_file_urls(api_a, two_versions):
    with override_settings(MODEL_ARCHIVE_MAX_BYTES=1024):
        response = api_a.get("/api/v1/models/clicks/versions/1/download")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "archive_too_large"


def test_concurrent_archive_streams_are_bounded_per_tenant(api_a, api_b, tenant_b, two_versions):
    publish_model(tenant_b.tenant, name="clicks")
    with override_settings(MODEL_ARCHIVE_CONCURRENT_PER_TENANT=1):
        first = api_a.get("/api/v1/models/clicks/versions/1/download")
        assert first.status_code == 200
        second = api_a.get("/api/v1/models/clicks/versions/2/download")
        assert second.status_code == 429
        assert second.json()["error"]["code"] == "too_many_downloads"
        # Another tenant's downloads are not held up by A's.
        other = api_b.get("/api/v1/models/clicks/versions/1/download")
        assert other.status_code == 200
        b"".join(other.streaming_content)
        b"".join(first.streaming_content)  # read to the end: the slot is free again
        again = api_a.get("/api/v1/models/clicks/versions/2/download")
        assert again.status_code == 200
        b"".join(again.streaming_content)


def test_tf_serving_config_loads_the_aliased_versions_with_labels(api_a, tenant_a, two_versions):
    api_a.put("/api/v1/models/clicks/aliases/production", {"version": 1}, format="json")
    api_a.put("/api/v1/models/clicks/aliases/staging", {"version": 2}, format="json")
    response = api_a.get("/api/v1/models/clicks/export?engine=tf-serving")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    base = f"s3://mlplatform-test/tenants/{tenant_a.tenant.id}/models/clicks"
    assert f'base_path: "{base}"' in text
    assert "model_version_policy { specific { versions: 1 versions: 2 } }" in text
    assert 'version_labels { key: "production" value: 1 }' in text
    assert 'version_labels { key: "staging" value: 2 }' in text
    # The base path holds exactly the numeric folders TensorFlow Serving expects, as the config says.
    folders = {
        key[len(base) - len("s3://mlplatform-test/") + 1 :].split("/")[0]
        for key in storage.list_keys(storage.tenant_key(tenant_a.tenant.id, "models", "clicks") + "/")
    }
    assert folders == {"1", "2"}
    for number in ("1", "2"):
        assert storage.head(storage.tenant_key(tenant_a.tenant.id, "models", "clicks", number, "saved_model.pb"))

    own = api_a.get("/api/v1/models/clicks/export?engine=tf-serving&base_path=/models/clicks").content.decode()
    assert 'base_path: "/models/clicks"' in own


def test_kserve_inference_service(api_a, tenant_a):
    publish_model(tenant_a.tenant, name="click_model_7")
    response = api_a.get("/api/v1/models/click_model_7/export?engine=kserve")
    assert response.status_code == 200
    document = yaml.safe_load(response.content)
    assert document["kind"] == "InferenceService"
    assert document["metadata"]["name"] == "click-model-7"
    assert document["metadata"]["annotations"]["mlplatform/version"] == "1"
    predictor = document["spec"]["predictor"]["model"]
    assert predictor["modelFormat"] == {"name": "tensorflow"}
    assert predictor["storageUri"] == f"s3://mlplatform-test/tenants/{tenant_a.tenant.id}/models/click_model_7"


@pytest.mark.parametrize(
    "query",
    [
        "engine=onnx",
        "engine=kserve&base_path=relative/path",
        'engine=tf-serving&base_path=/models/x"%0Aconfig{',
        "engine=tf-serving&base_path=s3://bucket/a b",
        "engine=kserve&extra=1",
    ],
)
def test_bad_export_queries_are_400(api_a, two_versions, query):
    response = api_a.get(f"/api/v1/models/clicks/export?{query}")
    assert response.status_code == 400, response.content
    assert "error" in response.json()


def test_rollback_moves_the_alias_back_and_forth(api_a, tenant_a, two_versions):
    assert api_a.post("/api/v1/models/clicks/aliases/production/rollback").status_code == 404  # no such alias
    api_a.put("/api/v1/models/clicks/aliases/production", {"version": 1}, format="json")
    first = api_a.post("/api/v1/models/clicks/aliases/production/rollback")
    assert first.status_code == 409 and first.json()["error"]["code"] == "no_previous_version"
    api_a.put("/api/v1/models/clicks/aliases/production", {"version": 2}, format="json")
    response = api_a.post("/api/v1/models/clicks/aliases/production/rollback")
    assert response.status_code == 200 and response.json()["aliases"] == {"production": 1}
    assert api_a.post("/api/v1/models/clicks/aliases/production/rollback").json()["aliases"] == {"production": 2}

    publish_model(tenant_a.tenant, name="clicks", seed=3)
    api_a.put("/api/v1/models/clicks/aliases/production", {"version": 3}, format="json")
    ModelVersion.objects.filter(model__name="clicks", version=2).update(status=ModelVersion.Status.ARCHIVED)
    refused = api_a.post("/api/v1/models/clicks/aliases/production/rollback")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "version_not_ready"
    assert api_a.get("/api/v1/models/clicks").json()["aliases"] == {"production": 3}


def test_another_tenants_model_is_404_everywhere(api_b, two_versions):
    for method, url in [
        ("get", "/api/v1/models/clicks/versions/1/files"),
        ("get", "/api/v1/models/clicks/versions/1/download"),
        ("get", "/api/v1/models/clicks/export?engine=tf-serving"),
        ("post", "/api/v1/models/clicks/aliases/production/rollback"),
    ]:
        response = getattr(api_b, method)(url)
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "not_found"


def test_head_answers_the_headers_without_building_an_archive(api_a, two_versions):
    with override_settings(MODEL_ARCHIVE_CONCURRENT_PER_TENANT=1):
        held = api_a.get("/api/v1/models/clicks/versions/1/download")  # the tenant's only slot
        head = api_a.head("/api/v1/models/clicks/versions/2/download")
        assert head.status_code == 200 and head.content == b""  # no slot needed, nothing read from storage
        assert head["Content-Disposition"] == 'attachment; filename="clicks-2.tar.gz"'
        b"".join(held.streaming_content)
