"""Serving compiled versions: ONNX Runtime answers as TensorFlow would, and TensorFlow is imported only for a
version without a compiled artifact."""

from __future__ import annotations

import urllib.request

import pytest

from serving.models import ModelVersion
from tests.support.serving import call, publish_model, serving_server
from tests.support.workers import serving_process

INSTANCES = {
    "ctr": ["12 85 3 9 41 7 7 120", "", "1", "999999 3 4"],
    "text": ["很好 很好 推荐", "awful product!", "", "Great 😀 混合 text"],
    "tabular": [{"age": 31.5, "city": "paris"}, {"age": -4.0, "city": "never seen"}, {"age": 0.0, "city": ""}],
}


def _scores(rows: list[dict]) -> list[float]:
    """Every probability of every row, flat (one per row for a binary model, one per label otherwise)."""
    flat: list[float] = []
    for row in rows:
        value = row.get("probability", row.get("probabilities"))
        flat += value if isinstance(value, list) else [value]
    return flat


@pytest.mark.django_db(transaction=True)  # the serving app reads the registry from its own threads
@pytest.mark.parametrize("kind", list(INSTANCES))
def test_a_compiled_version_answers_like_its_saved_model(tenant_a, kind):
    publish_model(tenant_a.tenant, name="tf", kind=kind, seed=4)
    publish_model(tenant_a.tenant, name="onnx", kind=kind, seed=4, compiled=True)
    body = {"instances": INSTANCES[kind]}
    with serving_server() as (base, app):
        status, by_tensorflow, _ = call(base, "POST", "/v1/models/tf:predict", body, tenant_a.raw_key)
        assert status == 200, by_tensorflow
        status, by_onnx, headers = call(base, "POST", "/v1/models/onnx:predict", body, tenant_a.raw_key)
        assert status == 200, by_onnx
        assert headers["X-Model-Version"] == "1"
        runtimes = {m.spec.model_name: m.runtime for m in app.cache.loaded()}
    assert runtimes == {"tf": "tensorflow", "onnx": "onnxruntime"}
    assert [r["label"] for r in by_onnx["predictions"]] == [r["label"] for r in by_tensorflow["predictions"]]
    assert _scores(by_onnx["predictions"]) == pytest.approx(_scores(by_tensorflow["predictions"]), abs=1e-5)


@pytest.mark.django_db(transaction=True)
def test_the_registry_api_says_which_runtime_serves_a_version_and_why(tenant_a, api_a):
    publish_model(tenant_a.tenant, name="onnx", kind="ctr", compiled=True)
    publish_model(tenant_a.tenant, name="tf", kind="ctr")
    compiled = api_a.get("/api/v1/models/onnx/versions/1").json()["serving"]
    assert compiled["runtime"] == "onnxruntime" and compiled["parity"]["passed"]
    assert compiled["parity"]["max_abs_difference"] <= 1e-5
    legacy = api_a.get("/api/v1/models/tf/versions/1").json()["serving"]
    assert legacy == {
        "runtime": "tensorflow",
        "reason": "published before compiled serving (manage.py compile_versions)",
        "parity": None,
    }
    manifest = ModelVersion.objects.get(model__name="onnx").manifest
    assert {"compiled/model.onnx", "compiled/preprocess.json"} <= set(manifest["files"])
    assert manifest["files"]["compiled/model.onnx"]["sha256"] == manifest["compiled"]["model"]["sha256"]


def _metrics(base: str) -> str:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        return response.read().decode()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_serving_process_imports_tensorflow_only_for_a_version_that_needs_it(tenant_a):
    publish_model(tenant_a.tenant, name="onnx", kind="ctr", compiled=True)
    publish_model(tenant_a.tenant, name="tf", kind="ctr")
    with serving_process() as base:
        assert "serving_tensorflow_loaded 0.0" in _metrics(base)
        status, rows, _ = call(base, "POST", "/v1/models/onnx:predict", {"instances": ["1 2 3"]}, tenant_a.raw_key)
        assert status == 200, rows
        after_compiled = _metrics(base)
        assert "serving_tensorflow_loaded 0.0" in after_compiled
        series = f'model="onnx",runtime="onnxruntime",tenant="{tenant_a.tenant.id}",version="1"'
        assert f"serving_model_runtime{{{series}}} 1.0" in after_compiled
        status, rows, _ = call(base, "POST", "/v1/models/tf:predict", {"instances": ["1 2 3"]}, tenant_a.raw_key)
        assert status == 200, rows
        assert "serving_tensorflow_loaded 1.0" in _metrics(base)
