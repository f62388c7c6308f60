"""``:explain`` over real HTTP: integrated-gradients explanations of each template's trained model, complete (the
attributions add up to the output's change from the baseline), with exactly :predict's predictions; the same
auth, scoping and bad-input handling as :predict, limits of its own checked before any TensorFlow work, and
explanations metered (and counted) apart from predictions."""

from __future__ import annotations

import csv
import io
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from core import storage
from serving.models import ModelVersion, PredictionUsage
from serving.runtime import explaining, loader
from serving.runtime.explaining import ExplainSlots
from serving.runtime.http import HTTPError
from serving.runtime.signatures import Signature
from tests.support.jobs import TINY_CTR, ready_dataset, sample_csv, submit_job, wait_for
from tests.support.serving import call, parse_metrics, publish_model, serving_server
from training.models import TrainingJob
from training.trainer.run import run_job

pytestmark = pytest.mark.django_db(transaction=True)

EXPLANATION = {
    "signature": "explain",
    "method": "integrated_gradients",
    "steps": 50,
    "rule": "trapezoidal",
    "baseline": "test",
    "attributed_at": "test",
    "unit": "id_position",
}
COMPLETENESS = 0.05  # |sum(attributions) - (instance output - baseline output)|
TABULAR_COLUMNS = ["age", "income", "debt_ratio", "employment", "late_payments"]
TEMPLATES = {
    # template: (sample data kind, label column, job fields)
    "sequence_ctr": ("ctr", "clicked", {"params": TINY_CTR}),
    "text_classifier": ("sentiment", "sentiment", {"params": {"epochs": 1, "embedding_dim": 8, "max_tokens": 500}}),
    "tabular_classifier": (
        "tabular",
        "defaulted",
        {"params": {"epochs": 1, "hidden_units": [8]}, "feature_columns": TABULAR_COLUMNS},
    ),
}


def _trained(api, template: str) -> tuple[ModelVersion, list[dict]]:
    """A tiny model of ``template`` trained and published by the trainer (with its explain signature), and a few
    of its dataset's rows as instances."""
    kind, label, fields = TEMPLATES[template]
    content = sample_csv(kind, 200)
    dataset_id = ready_dataset(api, content, label=label, name=kind)
    response = submit_job(api, dataset_id, template=template, model_name=kind, label_column=label, **fields)
    assert response.status_code == 201, response.json()
    run_job(job_id=response.json()["id"], worker="test-worker")
    job = TrainingJob.objects.get(pk=response.json()["id"])
    assert job.status == "succeeded", job.error_traceback[-3000:]
    version = ModelVersion.objects.get(job=job)
    inputs = version.manifest["signature"]["inputs"]
    rows = list(csv.DictReader(io.StringIO(content)))[:3]
    instances = [
        {name: float(row[name]) if spec["dtype"].startswith("float") else row[name] for name, spec in inputs.items()}
        for row in rows
    ]
    return version, instances


def _median_seconds(call_once, times: int = 7) -> float:
    spent = []
    for _ in range(times):
        started = time.perf_counter()
        call_once()
        spent.append(time.perf_counter() - started)
    return statistics.median(spent)


@pytest.mark.parametrize("template", list(TEMPLATES))
def test_explanations_are_complete_match_predict_and_are_metered_apart(api_a, tenant_a, tenant_b, template, caplog):
    version, instances = _trained(api_a, template)
    manifest, name = version.manifest, version.model.name
    assert manifest["explanation"]["signature"] == "explain"
    unit, labels = manifest["explanation"]["unit"], manifest["label_names"]
    old = publish_model(tenant_a.tenant, name="before-explanations")  # published without an explain signature
    key = tenant_a.raw_key
    # Two instances' estimated memory fit in SERVING_EXPLAIN_MAX_BYTES: the three instances go in calls of 2 and 1.
    explanation = manifest["explanation"] | {"bytes_per_instance": 2**20}
    ModelVersion.objects.filter(pk=version.pk).update(manifest=manifest | {"explanation": explanation})
    settings = {"SERVING_EXPLAIN_MAX_BYTES": 2 * 2**20 + 1, "SERVING_EXPLAIN_MAX_INSTANCES": 4}
    with serving_server(SERVING_METERING_FLUSH_SECONDS=1, **settings) as (base, app):
        path = f"/v1/models/{name}/versions/{version.version}"
        status, explained, headers = call(base, "POST", f"{path}:explain", {"instances": instances}, key)
        assert status == 200, explained
        assert [e.rows_per_call for e in app.explainers._entries.values()] == [2]
        assert headers["X-Model-Version"] == str(version.version)
        status, predicted, _ = call(base, "POST", f"{path}:predict", {"instances": instances}, key)
        assert status == 200 and explained["predictions"] == predicted["predictions"]  # exactly :predict's answer
        assert set(explained) == {"predictions", "explanations"} and len(explained["explanations"]) == len(instances)
        output_name = "probability" if "probability" in predicted["predictions"][0] else "probabilities"
        pairs = zip(explained["explanations"], predicted["predictions"], strict=True)
        for row, (explanation, prediction) in enumerate(pairs):
            (attribution,) = explanation["attributions"]
            value, baseline = attribution["instance_output_value"], attribution["baseline_output_value"]
            assert attribution["output_name"] == output_name
            if output_name == "probability":
                assert attribution["output_index"] == 0 and attribution["output_display_name"] == labels[-1]
                assert value == pytest.approx(prediction["probability"], abs=1e-5)
            else:
                index = attribution["output_index"]
                assert index == max(range(len(labels)), key=lambda i: prediction["probabilities"][i])
                assert attribution["output_display_name"] == labels[index] == prediction["label"]
                assert value == pytest.approx(prediction["probabilities"][index], abs=1e-5)
            features = attribution["feature_attributions"]
            if unit == "feature":
                assert set(features) == set(manifest["signature"]["inputs"])
                total = sum(features.values())
            else:
                (column,) = manifest["signature"]["inputs"]
                (positions,) = features.values()
                assert list(features) == [column] and positions, (row, features)
                assert all(p["token"] != "" and set(p) == {"position", "token", "attribution"} for p in positions)
                assert [p["position"] for p in positions] == sorted({p["position"] for p in positions})
                if unit == "id_position":  # each attributed position is one of the instance's ids
                    assert {p["token"] for p in positions} <= set(instances[row][column].split())
                total = sum(p["attribution"] for p in positions)
            assert abs(total - (value - baseline)) <= COMPLETENESS, (row, total, value, baseline)
            assert 0 <= attribution["approximation_error"] <= COMPLETENESS

        # Another tenant's key: no such model, exactly as for :predict; no key at all: 401.
        status, answer, _ = call(base, "POST", f"{path}:explain", {"instances": instances}, tenant_b.raw_key)
        assert status == 404 and name in answer["error"]
        assert call(base, "POST", f"{path}:explain", {"instances": instances})[0] == 401
        # Over the explanation cap (below predict's): refused before any TensorFlow work, as a 400.
        loads = app.explainers.loads
        status, answer, _ = call(base, "POST", f"/v1/models/{name}:explain", {"instances": instances * 2}, key)
        assert status == 400 and "At most 4 instances per explanation request" in answer["error"], answer
        status, answer, _ = call(base, "POST", f"{path}:explain", {"instances": [{"nope": 1}]}, key)
        assert status == 400 and "unknown input(s) nope" in answer["error"]
        assert app.explainers.loads == loads
        # A version published before explanations existed: 409, the serving error body naming the reason.
        status, answer, _ = call(base, "POST", "/v1/models/before-explanations:explain", {"instances": ["1 2"]}, key)
        assert status == 409 and answer["error"].startswith("explanations_unavailable"), answer

        # Latency at batch 1, warm, beside predict's (the closing note's figures).
        one = {"instances": instances[:1]}
        explain_seconds = _median_seconds(lambda: call(base, "POST", f"{path}:explain", one, key))
        predict_seconds = _median_seconds(lambda: call(base, "POST", f"{path}:predict", one, key))
        print(
            f"\n{template}: explain {explain_seconds * 1000:.1f} ms, predict {predict_seconds * 1000:.1f} ms at batch 1"
        )
        explained_rows = len(instances) + 7
        wait_for(
            lambda: (
                sum(PredictionUsage.objects.filter(tenant=tenant_a.tenant).values_list("explanations", flat=True))
                == explained_rows
            ),
            15,
            "explanations were not metered",
        )
        status, text, _ = call(base, "GET", "/metrics")
        series = parse_metrics(text.decode())
        labels_of = f'model="{name}",tenant="{tenant_a.tenant.id}",version="{version.version}"'
        assert series[f"serving_explanations_total{{{labels_of}}}"] == explained_rows
        assert series["serving_explainers_loaded"] == 1
    usage = PredictionUsage.objects.get(tenant=tenant_a.tenant, model_name=name, version=version.version)
    # Explanations counted as explanations, never as predictions; every refused explanation is an error.
    assert (usage.explanations, usage.predictions) == (explained_rows, len(instances) + 7)
    assert usage.errors == 2 and usage.requests == 1 + 1 + 2 + 7 + 7
    assert not PredictionUsage.objects.filter(tenant=tenant_b.tenant).exists()
    assert not PredictionUsage.objects.filter(model_name=old.model.name).exists()  # the 409 is refused unmetered
    # The SavedModel's files joined the compiled ones :predict had fetched; nothing was fetched again as corrupt.
    assert "failed verification" not in caplog.text


def test_limits_and_input_checks_come_before_tensorflow(tenant_a, tenant_b):
    """A version whose manifest promises an explanation: every refusal happens before the explainer is loaded."""
    publish_model(tenant_a.tenant, name="clicks", manifest_fields={"explanation": EXPLANATION})
    publish_model(tenant_a.tenant, name="plain")
    publish_model(
        tenant_a.tenant, name="huge", manifest_fields={"explanation": EXPLANATION | {"bytes_per_instance": 2**30}}
    )
    key = tenant_a.raw_key
    with serving_server(SERVING_EXPLAIN_MAX_INSTANCES=2, SERVING_MAX_BODY_BYTES=4096) as (base, app):
        for raw, message in (
            (b"{not json", "not valid JSON"),
            (b'{"instances": []}', "no instances"),
            (b'{"instances": [12]}', "takes a string"),
            (b'{"instances": ["1 two"]}', "item ids"),
            (b'{"instances": ["1"], "explain": true}', "Unknown field"),
            (b'{"instances": ["1", "2", "3"]}', "At most 2 instances per explanation request; this one has 3"),
        ):
            status, answer, _ = call(base, "POST", "/v1/models/clicks:explain", raw=raw, key=key)
            assert status == 400 and message in answer["error"], (raw, answer)
        status, answer, _ = call(base, "POST", "/v1/models/clicks:explain", {"instances": ["1 " * 3000]}, key)
        assert status == 413
        for path in ("/v1/models/clicks:explain", "/v1/models/clicks/versions/1:explain"):
            status, answer, _ = call(base, "POST", path, {"instances": ["1"]}, tenant_b.raw_key)
            assert status == 404 and "clicks" in answer["error"]
        status, answer, _ = call(base, "POST", "/v1/models/clicks/labels/production:explain", {"instances": ["1"]}, key)
        assert status == 404  # no such alias, as for :predict
        assert call(base, "GET", "/v1/models/clicks:explain", key=key)[0] == 405
        status, answer, _ = call(base, "POST", "/v1/models/plain:explain", raw=b"{not json", key=key)
        assert status == 409 and "explanations_unavailable" in answer["error"]  # decided before the body is read
        # One instance of this version needs 1 GiB by its manifest's estimate: over the 512 MiB default, refused.
        status, answer, _ = call(base, "POST", "/v1/models/huge:explain", {"instances": ["1"]}, key)
        assert status == 409 and answer["error"].startswith("explanation_too_large"), answer
        assert "1,024 MiB" in answer["error"] and "512 MiB" in answer["error"]
        assert "SERVING_EXPLAIN_MAX_BYTES" in answer["error"]
        assert app.explainers.loads == 0 and app.explainers.keys() == ()


def test_one_tenants_explanations_in_flight_are_capped_without_holding_up_another(tenant_a, tenant_b):
    """With the explain thread busy, a tenant's second explanation is a 429 at once; another tenant's still queues.
    (These versions' manifests promise an explain signature their SavedModels lack: answered 503, never 500.)"""
    for tenant in (tenant_a, tenant_b):
        publish_model(tenant.tenant, name="clicks", manifest_fields={"explanation": EXPLANATION})
    body = {"instances": ["1 2"]}
    with serving_server(SERVING_EXPLAINS_PER_TENANT=1) as (base, app), ThreadPoolExecutor(2) as pool:
        busy = threading.Event()
        app._explain_pool.submit(busy.wait, 60)  # the explain thread is taken until the test lets it go
        try:
            first = pool.submit(call, base, "POST", "/v1/models/clicks:explain", body, tenant_a.raw_key)
            wait_for(lambda: app.explain_slots.in_flight == 1, 30, "the first explanation did not start")
            status, answer, headers = call(base, "POST", "/v1/models/clicks:explain", body, tenant_a.raw_key)
            assert status == 429 and headers["Retry-After"] == "1" and "1 explanations in progress" in answer["error"]
            other = pool.submit(call, base, "POST", "/v1/models/clicks:explain", body, tenant_b.raw_key)
            wait_for(lambda: app.explain_slots.in_flight == 2, 30, "the other tenant's explanation was refused")
            status, answer, _ = call(base, "POST", "/v1/models/clicks:predict", body, tenant_a.raw_key)
            assert status == 200  # predictions are not behind explanations
        finally:
            busy.set()
        for pending in (first, other):
            status, answer, _ = pending.result(timeout=60)
            assert status == 503 and "cannot be explained" in answer["error"], answer
    assert app.explain_slots.in_flight == 0


def test_explanations_in_flight_are_limited_per_tenant_and_in_all():
    slots = ExplainSlots(per_tenant=2, total=3)
    with slots.slot("a"), slots.slot("a"):
        with pytest.raises(HTTPError) as refused, slots.slot("a"):
            pass
        assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "1"
        with slots.slot("b"):  # another tenant is not held up by a's explanations
            with pytest.raises(HTTPError) as busy, slots.slot("c"):
                pass
            assert busy.value.status == 503
        assert slots.in_flight == 2
    assert slots.in_flight == 0
    with slots.slot("a"):  # released slots are taken again
        assert slots.in_flight == 1


def test_rows_per_call_follow_the_manifests_estimate_and_the_byte_limit():
    def manifest(size) -> dict:
        return {"explanation": EXPLANATION | ({} if size is None else {"bytes_per_instance": size})}

    mib = 2**20
    assert explaining.rows_per_call(manifest(mib), max_bytes=512 * mib) == 512
    assert explaining.rows_per_call(manifest(100 * mib), max_bytes=512 * mib) == 5  # 5 x 100 MiB fit, 6 do not
    assert explaining.rows_per_call(manifest(512 * mib), max_bytes=512 * mib) == 1
    assert explaining.too_large("m", 1, manifest(512 * mib), max_bytes=512 * mib) is None
    refusal = explaining.too_large("m", 3, manifest(512 * mib + 1), max_bytes=512 * mib)
    assert refusal.status == 409 and "version 3 of m" in refusal.message
    # No estimate (an older version), or one that is not a positive number: one instance per call, never refused.
    for size in (None, 0, -5, True, "big", float("nan")):
        assert explaining.bytes_per_instance(manifest(size)) is None
        assert explaining.rows_per_call(manifest(size), max_bytes=512 * mib) == explaining.DEFAULT_ROWS_PER_CALL == 1
        assert explaining.too_large("m", 1, manifest(size), max_bytes=1) is None


class _ExplainFunction:
    """A SavedModel's explain function as serving sees it (three attributions per row), recording the rows of
    each call; ``error`` is raised instead of answering."""

    structured_input_signature = ((), {"item_ids": None})
    structured_outputs = dict.fromkeys(explaining.OUTPUTS)

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[int] = []
        self.error = error

    def __call__(self, **tensors):
        import tensorflow as tf

        rows = int(tensors["item_ids"].shape[0])
        self.calls.append(rows)
        if self.error is not None:
            raise self.error
        start = sum(self.calls[:-1])
        ids = tf.range(start, start + rows, dtype=tf.float32)
        return {
            "predictions": tf.reshape(ids, [rows, 1]),
            "output_index": tf.zeros([rows], tf.int32),
            "instance_output": ids,
            "baseline_output": tf.zeros([rows]),
            "attributions": tf.stack([ids, ids, ids], axis=1),
            "tokens": tf.fill([rows, 3], "t"),
        }


def _explainer(tenant, function: _ExplainFunction, rows_per_call: int) -> explaining.Explainer:
    version = publish_model(tenant, name="clicks", manifest_fields={"explanation": EXPLANATION})
    spec = loader.VersionSpec(
        str(tenant.id), tenant.slug, "clicks", version.version, version.object_prefix, version.manifest
    )

    class Saved:
        signatures = {"explain": function}

    return explaining.Explainer(spec, Saved(), Signature.from_manifest(spec.manifest), 0.0, rows_per_call=rows_per_call)


def test_the_signature_runs_in_chunks_of_rows_and_its_answers_are_joined_in_order(tenant_a):
    function = _ExplainFunction()
    explainer = _explainer(tenant_a.tenant, function, rows_per_call=2)
    columns = explainer.signature.example_batch(5)
    arrays = explainer.explain(columns)
    assert function.calls == [2, 2, 1]
    assert arrays["instance_output"].tolist() == [0, 1, 2, 3, 4] and arrays["attributions"].shape == (5, 3)
    assert arrays["predictions"].shape == (5, 1) and arrays["tokens"].shape == (5, 3)


def test_tensorflow_running_out_of_memory_or_failing_is_a_503_cause_not_a_500(tenant_a):
    import tensorflow as tf

    exhausted = _ExplainFunction(tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor"))
    with pytest.raises(explaining.ExplainMemoryError, match="out of memory"):
        _explainer(tenant_a.tenant, exhausted, rows_per_call=16).explain({"item_ids": ["1 2"]})
    failing = _ExplainFunction(tf.errors.InternalError(None, None, "kernel failed"))
    with pytest.raises(explaining.ExplainerError, match="kernel failed"):
        _explainer(tenant_a.tenant, failing, rows_per_call=16).explain({"item_ids": ["1 2"]})


def test_a_storage_failure_fetching_an_explainers_files_is_a_503_with_retry_after(tenant_a, tmp_path):
    """A compiled version answers :predict from its compiled files only; explaining it fetches its SavedModel too.
    With those objects gone from the bucket, the fetch fails: 503 with Retry-After (again while the failed load
    is remembered), never a 500; predictions keep answering."""
    version = publish_model(tenant_a.tenant, name="clicks", compiled=True, manifest_fields={"explanation": EXPLANATION})
    body = {"instances": ["1 2"]}
    with serving_server(SERVING_CACHE_DIR=tmp_path) as (base, app):
        assert call(base, "POST", "/v1/models/clicks:predict", body, tenant_a.raw_key)[0] == 200
        storage.delete_key(version.object_prefix + "saved_model.pb")
        for _ in range(2):
            status, answer, headers = call(base, "POST", "/v1/models/clicks:explain", body, tenant_a.raw_key)
            assert status == 503 and headers["Retry-After"] == "5", answer
            assert "could not be fetched now" in answer["error"]
        assert call(base, "POST", "/v1/models/clicks:predict", body, tenant_a.raw_key)[0] == 200
        assert app.explainers.loads == 0


def test_an_explainers_folder_is_never_pruned_while_it_is_fetched_or_loaded(tenant_a, settings, tmp_path):
    """The disk prune spares versions an explainer is fetching or loading (marked in use), and the serving app's
    prune spares the versions explainers have loaded."""
    settings.SERVING_CACHE_DIR = tmp_path
    version = publish_model(tenant_a.tenant, name="clicks", manifest_fields={"explanation": EXPLANATION})
    spec = loader.VersionSpec(
        str(tenant_a.tenant.id),
        tenant_a.tenant.slug,
        "clicks",
        version.version,
        version.object_prefix,
        version.manifest,
    )
    seen = []

    def load(spec, *, max_bytes):  # fetches, then a model load elsewhere prunes the disk to nothing
        folder = loader.fetch(spec)
        loader.prune_disk_cache(keep=set(), budget_bytes=0)
        seen.append(folder.is_dir() and max_bytes)
        return explaining.Explainer(
            spec,
            type("Saved", (), {"signatures": {"explain": _ExplainFunction()}})(),
            Signature.from_manifest(spec.manifest),
            0.0,
        )

    explainers = explaining.Explainers(max_count=1, max_bytes=123, load=load)
    explainers.get(spec)
    assert seen == [123] and explainers.keys() == (spec.key,)
    # Loaded: the serving app's prune after a model load (keep: the loaded models, none here) spares it too.
    settings.SERVING_CACHE_DISK_BUDGET_BYTES = 0
    from serving.runtime.app import ServingApp

    assert ServingApp._prune_disk(SimpleNamespace(explainers=explainers), keep=set()) == []
    assert loader.local_dir(spec).is_dir()
    assert loader.prune_disk_cache(keep=set(), budget_bytes=0) == [loader.local_dir(spec)]  # no longer in use
