"""The serving process over real HTTP: both protocols, version choice, auth, bad input, cache, limits, metering."""

from __future__ import annotations

import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from serving import services as registry
from serving.models import ModelVersion, PredictionUsage
from tests.support.factories import make_key
from tests.support.serving import call, publish_model, serving_server

pytestmark = pytest.mark.django_db(transaction=True)


def test_tfserving_rows_and_columns(tenant_a):
    publish_model(tenant_a.tenant, name="clicks")
    with serving_server() as (base, _):
        status, body, headers = call(
            base,
            "POST",
            "/v1/models/clicks:predict",
            {"instances": ["1 2 3", "4 5 6 7 8 9 10 11 12"]},
            tenant_a.raw_key,
        )
        assert status == 200, body
        assert headers["X-Model-Version"] == "1"
        assert len(body["predictions"]) == 2
        for row in body["predictions"]:
            assert set(row) == {"probability", "label"}
            assert 0.0 <= row["probability"] <= 1.0
            assert row["label"] == ("1" if row["probability"] >= 0.5 else "0")
        status, columns, _ = call(
            base,
            "POST",
            "/v1/models/clicks:predict",
            {"inputs": {"item_ids": ["1 2 3", "4 5 6 7 8 9 10 11 12"]}},
            tenant_a.raw_key,
        )
        assert status == 200, columns
        assert columns["outputs"]["probability"] == [r["probability"] for r in body["predictions"]]


def test_classifiers_answer_probabilities_and_label_names(tenant_a):
    publish_model(tenant_a.tenant, name="sentiment", kind="text")
    publish_model(tenant_a.tenant, name="churn", kind="tabular")
    with serving_server() as (base, _):
        status, body, _ = call(
            base,
            "POST",
            "/v1/models/sentiment:predict",
            {"instances": ["很好 很好", "awful product"]},
            tenant_a.raw_key,
        )
        assert status == 200, body
        for row in body["predictions"]:
            assert len(row["probabilities"]) == 3
            assert sum(row["probabilities"]) == pytest.approx(1.0, abs=1e-4)
            assert (
                row["label"]
                == ["negative", "neutral", "positive"][row["probabilities"].index(max(row["probabilities"]))]
            )
        # Two inputs: rows name them; columns give one list per input.
        status, rows, _ = call(
            base,
            "POST",
            "/v1/models/churn:predict",
            {"instances": [{"age": 30, "city": "oslo"}, {"age": [41.5], "city": ["lima"]}]},
            tenant_a.raw_key,
        )
        assert status == 200, rows
        status, columns, _ = call(
            base,
            "POST",
            "/v1/models/churn:predict",
            {"inputs": {"age": [30, 41.5], "city": ["oslo", "lima"]}},
            tenant_a.raw_key,
        )
        assert status == 200, columns
        assert columns["outputs"]["label"] == [r["label"] for r in rows["predictions"]]
        assert columns["outputs"]["probabilities"] == [r["probabilities"] for r in rows["predictions"]]


def test_kserve_v2_protocol(tenant_a):
    publish_model(tenant_a.tenant, name="clicks")
    with serving_server() as (base, _):
        assert call(base, "GET", "/v2/health/live")[0] == 200
        assert call(base, "GET", "/v2/health/ready")[1] == {"ready": True}
        assert call(base, "GET", "/v2")[1]["name"] == "mlplatform-serving"
        status, ready, _ = call(base, "GET", "/v2/models/clicks/ready", key=tenant_a.raw_key)
        assert (status, ready["ready"]) == (200, True)
        status, meta, _ = call(base, "GET", "/v2/models/clicks", key=tenant_a.raw_key)
        assert status == 200
        assert meta["versions"] == ["1"] and meta["platform"] == "tensorflow_savedmodel"
        assert meta["inputs"] == [{"name": "item_ids", "datatype": "BYTES", "shape": [-1]}]
        body = {
            "id": "req-7",
            "inputs": [{"name": "item_ids", "shape": [2], "datatype": "BYTES", "data": ["1 2", "3 4 5"]}],
        }
        status, answer, _ = call(base, "POST", "/v2/models/clicks/versions/1/infer", body, tenant_a.raw_key)
        assert status == 200, answer
        assert answer["id"] == "req-7" and answer["model_name"] == "clicks" and answer["model_version"] == "1"
        outputs = {o["name"]: o for o in answer["outputs"]}
        assert outputs["probability"]["datatype"] == "FP32" and outputs["probability"]["shape"] == [2]
        assert outputs["label"]["datatype"] == "BYTES" and len(outputs["label"]["data"]) == 2
        only = dict(body, outputs=[{"name": "label"}])
        status, answer, _ = call(base, "POST", "/v2/models/clicks/infer", only, tenant_a.raw_key)
        assert status == 200 and [o["name"] for o in answer["outputs"]] == ["label"]


def test_tfserving_status_and_metadata(tenant_a):
    publish_model(tenant_a.tenant, name="clicks")
    publish_model(tenant_a.tenant, name="clicks", seed=2)
    with serving_server() as (base, _):
        status, body, _ = call(base, "GET", "/v1/models/clicks", key=tenant_a.raw_key)
        assert status == 200
        assert [s["version"] for s in body["model_version_status"]] == ["2", "1"]
        assert body["model_version_status"][0]["state"] == "AVAILABLE"
        status, body, _ = call(base, "GET", "/v1/models/clicks/versions/1", key=tenant_a.raw_key)
        assert [s["version"] for s in body["model_version_status"]] == ["1"]
        status, meta, _ = call(base, "GET", "/v1/models/clicks/versions/1/metadata", key=tenant_a.raw_key)
        assert status == 200
        signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert signature["inputs"]["item_ids"]["dtype"] == "DT_STRING"
        assert set(signature["outputs"]) == {"probability", "label"}
        assert meta["model_spec"] == {"name": "clicks", "signature_name": "", "version": "1"}


def _version_of(base, path, key):
    status, body, headers = call(base, "POST", path, {"instances": ["1 2 3"]}, key)
    assert status == 200, body
    return int(headers["X-Model-Version"])


def test_version_choice_named_label_split_production_latest(tenant_a):
    tenant = tenant_a.tenant
    for seed in (1, 2, 3):
        publish_model(tenant, name="clicks", seed=seed)
    with serving_server(SERVING_ROUTE_TTL_SECONDS=0) as (base, _):
        key = tenant_a.raw_key
        assert _version_of(base, "/v1/models/clicks:predict", key) == 3  # latest
        registry.set_alias(tenant=tenant, model_name="clicks", alias="production", version=1)
        registry.set_alias(tenant=tenant, model_name="clicks", alias="staging", version=2)
        assert _version_of(base, "/v1/models/clicks:predict", key) == 1  # production
        assert _version_of(base, "/v1/models/clicks/labels/staging:predict", key) == 2
        assert _version_of(base, "/v1/models/clicks/versions/3:predict", key) == 3
        registry.set_traffic(tenant=tenant, model_name="clicks", weights={"2": 50, "3": 50})
        seen = {_version_of(base, "/v1/models/clicks:predict", key) for _ in range(40)}
        assert seen == {2, 3}  # the split beats production; P(missing one) = 2 * 0.5**40
        # Explicit v2 protocol version too.
        v2 = {"inputs": [{"name": "item_ids", "shape": [1], "datatype": "BYTES", "data": ["1"]}]}
        assert call(base, "POST", "/v2/models/clicks/versions/2/infer", v2, key)[1]["model_version"] == "2"


def test_unknown_publishing_and_archived_versions(tenant_a):
    tenant = tenant_a.tenant
    publish_model(tenant, name="clicks")
    publish_model(tenant, name="clicks", seed=2)
    registry.archive_version(tenant=tenant, model_name="clicks", version=1)
    publishing = ModelVersion.objects.create(
        tenant=tenant,
        model=ModelVersion.objects.get(version=2).model,
        version=3,
        template="sequence_ctr",
        object_prefix="unused/",
    )
    assert publishing.status == ModelVersion.Status.PUBLISHING
    with serving_server() as (base, _):
        key, body = tenant_a.raw_key, {"instances": ["1"]}
        cases = {
            "/v1/models/nope:predict": 404,
            "/v1/models/clicks/versions/9:predict": 404,
            "/v1/models/clicks/versions/x1:predict": 404,
            "/v1/models/clicks/versions/99999999999:predict": 404,
            "/v1/models/clicks/labels/canary:predict": 404,
            "/v1/models/clicks/versions/3:predict": 409,
            "/v1/models/clicks/versions/1:predict": 409,
            "/v1/models/clicks:classify": 400,
            "/v1/nothing-here": 404,
        }
        for path, expected in cases.items():
            status, answer, _ = call(base, "POST", path, body, key)
            assert status == expected, (path, answer)
            assert isinstance(answer["error"], str) and answer["error"], path
        assert (
            "still being published" in call(base, "POST", "/v1/models/clicks/versions/3:predict", body, key)[1]["error"]
        )
        assert call(base, "GET", "/v1/models/clicks:predict", key=key)[0] == 405
        assert call(base, "POST", "/v1/models/clicks:predict", body, key)[0] == 200  # still serving


def test_keys_scopes_and_suspension(tenant_a, tenant_b):
    from tenants import services as tenant_services
    from tenants.models import Tenant

    publish_model(tenant_a.tenant, name="clicks")
    read_only = make_key(tenant_a.tenant, scopes=("read",)).raw_key
    revoked = make_key(tenant_a.tenant)
    tenant_services.revoke_api_key(tenant=tenant_a.tenant, key_id=revoked.api_key.pk)
    body = {"instances": ["1"]}
    with serving_server(SERVING_ROUTE_TTL_SECONDS=0) as (base, _):
        path = "/v1/models/clicks:predict"
        assert call(base, "POST", path, body)[0] == 401
        assert call(base, "POST", path, body, "not-a-key")[0] == 401
        assert call(base, "POST", path, body, tenant_a.raw_key + "x")[0] == 401
        status, answer, _ = call(base, "POST", path, body, read_only)
        assert status == 403 and "predict" in answer["error"]
        assert call(base, "POST", path, body, revoked.raw_key)[0] == 401
        # Another tenant's model does not exist for this caller, on every endpoint.
        assert call(base, "POST", path, body, tenant_b.raw_key)[0] == 404
        # Suspension is refused at once, before any model is touched.
        Tenant.objects.filter(pk=tenant_a.tenant.pk).update(status=Tenant.Status.SUSPENDED)
        status, answer, _ = call(base, "POST", path, body, tenant_a.raw_key)
        assert status == 403 and "suspended" in answer["error"]


MODEL_ENDPOINTS = [
    ("POST", "/v1/models/{name}:predict", {"instances": ["1"]}),
    ("POST", "/v1/models/{name}/versions/1:predict", {"instances": ["1"]}),
    ("POST", "/v1/models/{name}/labels/production:predict", {"instances": ["1"]}),
    ("GET", "/v1/models/{name}", None),
    ("GET", "/v1/models/{name}/versions/1", None),
    ("GET", "/v1/models/{name}/labels/production", None),
    ("GET", "/v1/models/{name}/metadata", None),
    ("GET", "/v1/models/{name}/versions/1/metadata", None),
    (
        "POST",
        "/v2/models/{name}/infer",
        {"inputs": [{"name": "item_ids", "shape": [1], "datatype": "BYTES", "data": ["1"]}]},
    ),
    (
        "POST",
        "/v2/models/{name}/versions/1/infer",
        {"inputs": [{"name": "item_ids", "shape": [1], "datatype": "BYTES", "data": ["1"]}]},
    ),
    ("GET", "/v2/models/{name}", None),
    ("GET", "/v2/models/{name}/versions/1", None),
    ("GET", "/v2/models/{name}/ready", None),
    ("GET", "/v2/models/{name}/versions/1/ready", None),
]


def test_every_model_endpoint_is_tenant_scoped(tenant_a, tenant_b):
    """Tenant A's model answers A on every endpoint, and is 'no such model' (404) for B's key; a missing key is 401."""
    publish_model(tenant_a.tenant, name="clicks")
    registry.set_alias(tenant=tenant_a.tenant, model_name="clicks", alias="production", version=1)
    with serving_server() as (base, _):
        for method, template, body in MODEL_ENDPOINTS:
            path = template.format(name="clicks")
            assert call(base, method, path, body, tenant_a.raw_key)[0] == 200, path
            status, answer, _ = call(base, method, path, body, tenant_b.raw_key)
            assert status == 404 and "clicks" in answer["error"], (path, answer)
            assert call(base, method, path, body)[0] == 401, path
    assert not PredictionUsage.objects.filter(tenant=tenant_b.tenant).exists()


BAD_REQUESTS = [
    (b"{not json", "not valid JSON"),
    (b"", "empty"),
    (b"[1, 2]", "JSON object"),
    (b'{"instances": ["1"], "inputs": ["1"]}', "exactly one"),
    (b'{"signature_name": "serving_default"}', "exactly one"),
    (b'{"instances": []}', "no instances"),
    (b'{"instances": "1 2"}', "list"),
    (b'{"instances": [{"wrong": "1"}]}', "unknown input(s) wrong"),
    (b'{"instances": [{"item_ids": "1", "extra": 2}]}', "unknown input(s) extra"),
    (b'{"instances": [12]}', "takes a string"),
    (b'{"instances": [null]}', "null"),
    (b'{"instances": [["1", "2"]]}', "a list"),
    (b'{"instances": ["1 two 3"]}', "item ids"),
    (b'{"instances": ["99999999999999999999999"]}', "item ids"),
    (b'{"inputs": {"item_ids": "1"}}', "list"),
    (b'{"inputs": {"other": ["1"]}}', "missing input(s) item_ids"),
    (b'{"instances": ["1"], "signature_name": "other"}', "signature_name"),
    (b'{"instances": ["1"], "extra": true}', "Unknown field"),
    (b'{"instances": [NaN]}', "not valid JSON"),
    (b'{"instances": ["1"]' + b"]" * 3, "not valid JSON"),
]
BAD_V2 = [
    ({"inputs": [{"name": "item_ids", "shape": [2], "datatype": "BYTES", "data": ["1"]}]}, "needs 2 values"),
    ({"inputs": [{"name": "item_ids", "shape": [1], "datatype": "FP32", "data": [1.0]}]}, "datatype BYTES"),
    ({"inputs": [{"name": "other", "shape": [1], "datatype": "BYTES", "data": ["1"]}]}, "missing input(s)"),
    ({"inputs": [{"name": "item_ids", "shape": [1, 3], "datatype": "BYTES", "data": ["1", "2", "3"]}]}, "shape"),
    ({"inputs": [{"name": "item_ids", "shape": [0], "datatype": "BYTES", "data": []}]}, "no instances"),
    (
        {
            "inputs": [{"name": "item_ids", "shape": [1], "datatype": "BYTES", "data": ["1"]}],
            "outputs": [{"name": "x"}],
        },
        "Unknown output",
    ),
    ({"inputs": "item_ids"}, "list of tensors"),
    ({"inputs": [{"name": "item_ids", "shape": [1], "datatype": "BYTES", "data": ["1"]}], "id": 5}, '"id"'),
]


def test_bad_input_is_a_clear_400_and_the_process_keeps_serving(tenant_a):
    publish_model(tenant_a.tenant, name="clicks")
    with serving_server(SERVING_MAX_INSTANCES=5, SERVING_MAX_BODY_BYTES=4096) as (base, _):
        key, path = tenant_a.raw_key, "/v1/models/clicks:predict"
        for raw, message in BAD_REQUESTS:
            status, answer, _ = call(base, "POST", path, raw=raw, key=key)
            assert status == 400, (raw, answer)
            assert message in answer["error"], (raw, answer)
        for body, message in BAD_V2:
            status, answer, _ = call(base, "POST", "/v2/models/clicks/infer", body, key)
            assert status == 400 and message in answer["error"], (body, answer)
        status, answer, _ = call(base, "POST", path, {"instances": ["1"] * 6}, key)
        assert status == 400 and "At most 5 instances" in answer["error"]
        status, answer, _ = call(base, "POST", path, {"instances": ["1 " * 3000]}, key)
        assert status == 413, answer
        assert call(base, "POST", path, {"instances": ["1", "2 3"]}, key)[0] == 200
    usage = PredictionUsage.objects.get(tenant=tenant_a.tenant)
    # Every refused request is metered against the version, except the 413 (refused before routing).
    assert usage.predictions == 2 and usage.errors == len(BAD_REQUESTS) + len(BAD_V2) + 1


def test_concurrent_callers_each_get_their_own_rows(tenant_a):
    publish_model(tenant_a.tenant, name="clicks")
    sequences = [" ".join(str((i * 7 + j) % 50) for j in range(i % 8 + 1)) for i in range(48)]
    with serving_server(SERVING_BATCH_WAIT_MICROSECONDS=5000) as (base, app):
        key, path = tenant_a.raw_key, "/v1/models/clicks:predict"
        alone = {s: call(base, "POST", path, {"instances": [s]}, key)[1]["predictions"][0] for s in sequences}
        with ThreadPoolExecutor(16) as pool:
            together = list(pool.map(lambda s: call(base, "POST", path, {"instances": [s, s]}, key)[1], sequences))
        for sequence, answer in zip(sequences, together, strict=True):
            assert answer["predictions"][0]["probability"] == pytest.approx(alone[sequence]["probability"], abs=1e-5)
            assert answer["predictions"][1] == answer["predictions"][0]
        (histogram,) = app.metrics.batch_rows.collect()
        calls = next(sample.value for sample in histogram.samples if sample.name == "serving_batch_rows_count")
        assert calls < len(sequences) * 2  # concurrent requests shared model calls


def test_single_flight_load_and_metrics(tenant_a):
    publish_model(tenant_a.tenant, name="clicks")
    key_of_version = (str(tenant_a.tenant.id), "clicks", 1)
    label = f'model="clicks",tenant="{tenant_a.tenant.id}",version="1"'  # tenants by id, never slug
    with serving_server(SERVING_METRICS_TOKEN="scrape-secret") as (base, app):
        key, path = tenant_a.raw_key, "/v1/models/clicks:predict"
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: call(base, "POST", path, {"instances": ["1 2"]}, key)[0], range(8)))
        assert statuses == [200] * 8
        counters = app.cache.counters[key_of_version]
        assert counters.loads == 1 and counters.misses >= 1 and counters.hits + counters.misses == 8
        assert call(base, "GET", "/metrics")[0] == 401
        request = urllib.request.Request(base + "/metrics", headers={"Authorization": "Bearer scrape-secret"})
        text = urllib.request.urlopen(request, timeout=30).read().decode()
        assert f"serving_model_loads_total{{{label}}} 1.0" in text
        assert f"serving_model_cache_hits_total{{{label}}} {float(counters.hits)}" in text
        assert f"serving_model_memory_bytes{{{label}}}" in text
        assert 'serving_requests_total{code="200",protocol="v1"} 8.0' in text
        assert "# HELP serving_requests_total " in text and "# HELP serving_model_memory_bytes " in text
        assert "serving_batch_rows_count" in text


def test_a_model_that_cannot_fit_is_a_503_with_retry_after(tenant_a):
    publish_model(tenant_a.tenant, name="clicks")
    with serving_server(SERVING_MEMORY_BUDGET_BYTES=1024) as (base, app):
        status, answer, headers = call(
            base, "POST", "/v1/models/clicks:predict", {"instances": ["1"]}, tenant_a.raw_key
        )
        assert status == 503 and headers["Retry-After"] == "5", answer
        assert "memory" in answer["error"]
        assert app.cache.loaded() == []
        assert call(base, "GET", "/v2/health/live")[0] == 200


def test_a_file_that_does_not_match_the_manifest_is_never_served(tenant_a, caplog):
    from core import storage

    version = publish_model(tenant_a.tenant, name="clicks")
    variables = next(name for name in version.manifest["files"] if name.startswith("variables/variables.data"))
    storage.put_bytes(version.object_prefix + variables, b"tampered")
    with serving_server() as (base, app):
        status, answer, _ = call(base, "POST", "/v1/models/clicks:predict", {"instances": ["1"]}, tenant_a.raw_key)
        assert status == 503 and "failed verification" in answer["error"]
        assert app.cache.loaded() == []
    assert any("does not match its manifest" in r.getMessage() for r in caplog.records)


def test_a_corrupted_disk_cache_is_fetched_again(tenant_a):
    from serving.runtime import loader

    publish_model(tenant_a.tenant, name="clicks")
    body = {"instances": ["1 2 3"]}
    with serving_server() as (base, app):
        first = call(base, "POST", "/v1/models/clicks:predict", body, tenant_a.raw_key)[1]
        folder = loader.local_dir(app.cache.loaded()[0].spec)
    (folder / "saved_model.pb").write_bytes(b"corrupt")
    with serving_server() as (base, _):
        status, again, _ = call(base, "POST", "/v1/models/clicks:predict", body, tenant_a.raw_key)
    assert status == 200 and again == first
    assert (folder / "saved_model.pb").read_bytes() != b"corrupt"


def test_rate_limit_per_tenant_from_the_plan(tenant_a, tenant_b):
    plan = tenant_a.tenant.plan
    plan.slug, plan.pk = "tiny", None
    plan.predictions_per_minute = 5
    plan.save()
    tenant_a.tenant.plan = plan
    tenant_a.tenant.save()
    publish_model(tenant_a.tenant, name="clicks")
    publish_model(tenant_b.tenant, name="clicks")
    with serving_server() as (base, _):
        path = "/v1/models/clicks:predict"
        assert call(base, "POST", path, {"instances": ["1", "2", "3"]}, tenant_a.raw_key)[0] == 200
        assert call(base, "POST", path, {"instances": ["1", "2"]}, tenant_a.raw_key)[0] == 200
        status, answer, headers = call(base, "POST", path, {"instances": ["1"]}, tenant_a.raw_key)
        assert status == 429 and int(headers["Retry-After"]) >= 1 and "5 predictions per minute" in answer["error"]
        status, answer, _ = call(base, "POST", path, {"instances": ["1"] * 6}, tenant_a.raw_key)
        assert status == 429 and "5 predictions per minute" in answer["error"]  # the empty bucket: refused unread
        assert call(base, "POST", path, {"instances": ["1"] * 6}, tenant_b.raw_key)[0] == 200  # B has its own budget


def test_predictions_are_metered_per_tenant_model_and_version(tenant_a, api_a):
    publish_model(tenant_a.tenant, name="clicks")
    publish_model(tenant_a.tenant, name="clicks", seed=2)
    with serving_server(SERVING_METERING_FLUSH_SECONDS=1) as (base, _):
        key = tenant_a.raw_key
        for _ in range(3):
            call(base, "POST", "/v1/models/clicks/versions/1:predict", {"instances": ["1", "2"]}, key)
        call(base, "POST", "/v1/models/clicks/versions/2:predict", {"instances": ["1"]}, key)
        call(base, "POST", "/v1/models/clicks/versions/2:predict", {"instances": [5]}, key)
        import time

        deadline = time.monotonic() + 10
        while PredictionUsage.objects.filter(tenant=tenant_a.tenant).count() < 2 and time.monotonic() < deadline:
            time.sleep(0.2)  # written by the periodic flush while the server runs
    rows = {u.version: u for u in PredictionUsage.objects.filter(tenant=tenant_a.tenant, model_name="clicks")}
    assert (rows[1].requests, rows[1].predictions, rows[1].errors) == (3, 6, 0)
    assert (rows[2].requests, rows[2].predictions, rows[2].errors) == (2, 1, 1)
    detail = api_a.get("/api/v1/models/clicks/versions/2").json()
    assert (detail["request_count"], detail["error_count"]) == (2, 1)


def test_hot_swap_moves_traffic_without_a_failed_request_and_unloads_the_old_version(tenant_a):
    import threading
    import time

    tenant = tenant_a.tenant
    tenant.plan.predictions_per_minute = 10**6
    tenant.plan.save()
    publish_model(tenant, name="clicks")
    publish_model(tenant, name="clicks", seed=2)
    registry.set_alias(tenant=tenant, model_name="clicks", alias="production", version=1)
    answers: list[tuple[int, int | None]] = []
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            status, _, headers = call(
                base, "POST", "/v1/models/clicks:predict", {"instances": ["1 2 3"]}, tenant_a.raw_key
            )
            answers.append((status, int(headers["X-Model-Version"]) if status == 200 else None))

    with serving_server(SERVING_ROUTE_TTL_SECONDS=1) as (base, app):
        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        registry.set_alias(tenant=tenant, model_name="clicks", alias="production", version=2)
        moved_at = len(answers)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (answers and answers[-1][1] == 2):
            time.sleep(0.05)
        time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join()
        loaded = {m.spec.version for m in app.cache.loaded()}
        loads = {str(version): c.loads for (_, _, version), c in app.cache.counters.items()}
        unloads = app.cache.unloads
    assert loads == {"2": 1}  # the new version was loaded once, ahead of its first request
    assert unloads == 1  # v1 unloaded once; its counters went with it
    assert all(status == 200 for status, _ in answers), [a for a in answers if a[0] != 200][:3]
    versions = [v for _, v in answers]
    assert versions[:moved_at] == [1] * moved_at
    switched = versions.index(2)
    assert set(versions[switched + 8 :]) == {2}  # after the switch (allowing in-flight ones), only the new version
    assert loaded == {2}  # v1 unloaded once its in-flight requests finished


def test_a_suspension_is_refused_within_half_a_second_despite_cached_keys(tenant_a):
    import time

    from tenants import services as tenant_services

    publish_model(tenant_a.tenant, name="clicks")
    with serving_server(SERVING_ROUTE_TTL_SECONDS=60) as (base, _):
        path, body = "/v1/models/clicks:predict", {"instances": ["1"]}
        assert call(base, "POST", path, body, tenant_a.raw_key)[0] == 200  # the key is cached for a minute now
        tenant_services.set_tenant_status(tenant=tenant_a.tenant, status="suspended")
        time.sleep(0.8)
        status, answer, _ = call(base, "POST", path, body, tenant_a.raw_key)
        assert status == 403 and "suspended" in answer["error"]
        tenant_services.set_tenant_status(tenant=tenant_a.tenant, status="active")
        time.sleep(0.8)
        assert call(base, "POST", path, body, tenant_a.raw_key)[0] == 200


def test_out_of_range_numbers_bad_unicode_and_odd_names_are_4xx_not_500(tenant_a):
    publish_model(tenant_a.tenant, name="churn", kind="tabular")
    publish_model(tenant_a.tenant, name="clicks")
    with serving_server() as (base, _):
        key = tenant_a.raw_key
        for age in ("1e39", "1" + "0" * 400, "-1e309"):
            raw = b'{"instances": [{"age": ' + age.encode() + b', "city": "oslo"}]}'
            status, answer, _ = call(base, "POST", "/v1/models/churn:predict", raw=raw, key=key)
            assert status == 400 and "finite" in answer["error"], (age, answer)
        for raw in (b'{"instances": ["\\ud800"]}', b'{"\\ud800": 1}', b'{"instances": [{"\\udfff": "1"}]}'):
            status, answer, _ = call(base, "POST", "/v1/models/clicks:predict", raw=raw, key=key)
            assert status == 400, (raw, answer)
        for path in ("/v1/models/a%00b:predict", "/v1/models/UPPER:predict", "/v2/models/..%2F..%2Fetc/infer"):
            status, answer, _ = call(base, "POST", path, {"instances": ["1"]}, key)
            assert status == 404, (path, answer)
        assert call(base, "POST", "/v1/models/clicks:predict", {"instances": ["1"]}, key)[0] == 200
