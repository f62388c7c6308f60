"""DP-SGD in the trainer: each example's gradient is clipped and the noise has the planned scale (observed on the
step itself), Poisson sampling has the planned rate and step count, private jobs of every template train, publish
a version with the privacy statement and serve, a resumed private job keeps the step count, and the noise does not
repeat with the job's seed."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from botocore.exceptions import ClientError
from dp_accounting import dp_event, rdp

from core import storage
from serving.models import ModelVersion
from tests.support.jobs import TINY_CTR, ready_dataset, sample_csv, submit_job
from tests.support.serving import call, serving_server
from training import privacy, templates
from training.models import TrainingJob
from training.services import dispatch_queued_jobs
from training.trainer import models, private, run
from training.trainer.data import Rows
from training.trainer.run import checkpoint_prefix, run_job

TEXTS = np.array(["好评 很好 推荐", "差评 太差", "great product, would buy", "awful product!", "很好", "太差 差 退货"])
CTR = {
    "max_len": 10,
    "embedding_dim": 4,
    "conv_filters": 4,
    "conv_kernel": 3,
    "pool_size": 2,
    "lstm_units": 4,
    "learning_rate": 0.01,
}


def make_plan(
    *,
    train_rows: int,
    batch_size: int,
    epochs: int,
    noise_multiplier: float = 1.0,
    clip_norm: float = 1.0,
    delta: float = 1e-4,
    reference: bool = False,
) -> dict:
    """A plan as ``TrainingJob.privacy`` holds it (the contract's keys), its epsilon from dp-accounting."""
    rate = batch_size / train_rows
    steps_per_epoch = max(1, round(1 / rate))
    accountant = rdp.RdpAccountant()
    event = dp_event.PoissonSampledDpEvent(rate, dp_event.GaussianDpEvent(noise_multiplier))
    accountant.compose(event, epochs * steps_per_epoch)
    epsilon = accountant.get_epsilon(delta)
    return {
        "noise_multiplier": noise_multiplier,
        "clip_norm": clip_norm,
        "delta": delta,
        "target_epsilon": None,
        "epsilon": epsilon,
        "epsilon_rdp": epsilon,
        "accountant": "rdp",
        "sampling": "poisson",
        "sample_rate": rate,
        "steps_per_epoch": steps_per_epoch,
        "steps": epochs * steps_per_epoch,
        "expected_batch_size": batch_size,
        "planned_train_rows": train_rows,
        "reference": reference,
        "accept_low_utility": True,
    }


def set_plan(job_id: str, plan: dict) -> None:
    """Give a job a plan of the test's own (its steps per epoch chosen), as ``TrainingJob.privacy`` holds it."""
    TrainingJob.objects.filter(pk=job_id).update(privacy=plan)


# --- the step itself -----------------------------------------------------------------------------------------


def _tabular(dropout: float = 0.0) -> keras.Model:
    features = {"age": np.array([20.0, 35.0, 50.0, 41.0]), "city": np.array(["paris", "oslo", "lima", "北京"])}
    return models.tabular_classifier(
        columns={"age": "float", "city": "string"},
        params={"hidden_units": [6], "dropout": dropout, "learning_rate": 0.01},
        features=features,
        classes=3,
    )


def _text(encoder: str) -> keras.Model:
    params = {
        "tokenize": "words",
        "max_tokens": 40,
        "sequence_length": 6,
        "embedding_dim": 4,
        "encoder": encoder,
        "lstm_units": 3,
        "learning_rate": 0.01,
    }
    return models.text_classifier(column="review", params=params, texts=TEXTS, classes=3, private=True)


# name: (builder, inputs of 4 rows, labels); the last tabular row's age is far out, so its gradient is huge.
CASES = {
    "sequence_ctr": (
        lambda: models.sequence_ctr(column="ids", params=CTR | {"vocab_size": 0}, vocab_size=30, unroll=True),
        lambda: tf.constant(["1 2 3", "4 5 6 7 8 9 10 11 12 13", "29", ""]),
        tf.constant([1.0, 0.0, 1.0, 0.0]),
    ),
    "text_bilstm": (lambda: _text("bilstm"), lambda: tf.constant([*TEXTS[:3], ""]), tf.constant([0, 1, 2, 0])),
    "text_pooling": (lambda: _text("pooling"), lambda: tf.constant(list(TEXTS[2:6])), tf.constant([0, 1, 2, 0])),
    "tabular": (
        _tabular,
        lambda: {
            "age": tf.constant([[20.0], [np.nan], [50.0], [1e7]]),
            "city": tf.constant([["paris"], ["x"], ["lima"], ["oslo"]]),
        },
        tf.constant([0, 1, 2, 0]),
    ),
}


def _row(inputs, i: int):
    if isinstance(inputs, dict):
        return {name: values[i : i + 1] for name, values in inputs.items()}
    return inputs[i : i + 1]


def _by_hand(model: keras.Model, inputs, labels, clip_norm: float) -> tuple[list[np.ndarray], list[float]]:
    """Each example's gradient through the whole model (not the split), clipped by hand: (clipped sum, raw norms)."""
    loss = keras.losses.get(model.loss)
    total = [np.zeros(v.shape, np.float32) for v in model.trainable_variables]
    norms = []
    for i in range(int(labels.shape[0])):
        with tf.GradientTape() as tape:
            output = model(_row(inputs, i), training=True)
            label = labels[i : i + 1]
            if output.shape[-1] == 1:
                label = tf.reshape(label, (-1, 1))
            value = tf.reduce_sum(loss(label, output))
        grads = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(value, model.trainable_variables)]
        norm = float(np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads)))
        norms.append(norm)
        for t, g in zip(total, grads, strict=True):
            t += g * min(1.0, clip_norm / norm)
    return total, norms


@pytest.mark.parametrize("name", list(CASES))
def test_the_step_clips_each_example_and_divides_by_the_expected_batch_size(name):
    build, inputs, labels = CASES[name]
    keras.utils.set_random_seed(4)
    clip_norm = 0.05  # below every example's gradient norm here: each one is scaled down
    model = private.make_private(build(), {"clip_norm": clip_norm, "noise_multiplier": 0.0, "expected_batch_size": 10})
    x = inputs()
    expected, norms = _by_hand(model, x, labels, clip_norm)
    assert min(norms) > clip_norm  # every example was clipped, so the sum's norm is at most 4 * C
    update = [g.numpy() for g in model.noisy_gradients(x, labels)]
    for got, want in zip(update, expected, strict=True):
        np.testing.assert_allclose(got, want / 10, atol=2e-6, rtol=1e-4)  # / expected_batch_size, not 4
    assert np.sqrt(sum(np.sum(g**2) for g in update)) <= 4 * clip_norm / 10 + 1e-6


def test_one_huge_gradient_contributes_at_most_the_clip_norm_and_the_optimizer_applies_the_update():
    keras.utils.set_random_seed(5)
    model = private.make_private(_tabular(), {"clip_norm": 1.0, "noise_multiplier": 0.0, "expected_batch_size": 4})
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss=model.loss, metrics=["accuracy"])
    _, inputs, labels = CASES["tabular"]
    x = inputs()
    expected, norms = _by_hand(model, x, labels, 1.0)
    assert norms[3] > 1000 and min(norms[:3]) < 1.0  # the outlier's gradient is huge, the others are not clipped
    # The outlier's share of the update is at most C: with or without it, the sum differs by at most 1.
    without, _ = _by_hand(model, _row_slice(x, 3), labels[:3], 1.0)
    gap = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(expected, without, strict=True)))
    assert 0.99 < gap <= 1.0 + 1e-5
    before = [v.numpy().copy() for v in model.trainable_variables]
    logs = model.train_on_batch(x, labels, return_dict=True)
    assert set(logs) >= {"loss", "accuracy"} and np.isfinite(logs["loss"])  # still reported to the tenant
    for start, after, want in zip(before, model.trainable_variables, expected, strict=True):
        np.testing.assert_allclose(start - after.numpy(), want / 4, atol=2e-6, rtol=1e-4)


def _row_slice(inputs, end: int):
    if isinstance(inputs, dict):
        return {name: values[:end] for name, values in inputs.items()}
    return inputs[:end]


def test_the_noise_has_standard_deviation_sigma_times_c_per_coordinate():
    keras.utils.set_random_seed(6)
    sigma, clip_norm, expected_batch = 3.0, 0.5, 8.0
    model = private.make_private(
        _text("pooling"), {"clip_norm": clip_norm, "noise_multiplier": sigma, "expected_batch_size": expected_batch}
    )
    _, inputs, labels = CASES["text_pooling"]
    x = inputs()
    clean = [g.numpy() for g in model.clipped_gradient_sum(x, labels)]
    noise = []
    for _ in range(20):
        noisy = model.noisy_gradients(x, labels)
        noise += [(n.numpy() * expected_batch - c).ravel() for n, c in zip(noisy, clean, strict=True)]
    noise = np.concatenate(noise)
    assert noise.size > 3000  # the std within 5% is then > 4 standard errors
    assert abs(noise.std() / (sigma * clip_norm) - 1) < 0.05
    assert abs(noise.mean()) < 4 * sigma * clip_norm / np.sqrt(noise.size)


def test_the_same_seed_gives_the_same_model_and_gradients_but_different_noise():
    def step(sigma: float) -> np.ndarray:
        keras.utils.set_random_seed(7)  # the job's seed: what a tenant (or anyone reading the job) knows
        model = private.make_private(
            _tabular(dropout=0.0), {"clip_norm": 1.0, "noise_multiplier": sigma, "expected_batch_size": 4}
        )
        _, inputs, labels = CASES["tabular"]
        return np.concatenate([g.numpy().ravel() for g in model.noisy_gradients(inputs(), labels)])

    np.testing.assert_array_equal(step(0.0), step(0.0))  # the seed fixes the model and the clean update
    first, second = step(1.0), step(1.0)
    assert not np.allclose(first, second)  # the noise does not come from the seed


def test_dropout_draws_its_own_mask_for_each_example():
    keras.utils.set_random_seed(8)
    model = private.make_private(
        _tabular(dropout=0.5), {"clip_norm": 1e6, "noise_multiplier": 0.0, "expected_batch_size": 1}
    )
    x = {"age": tf.constant([[30.0]] * 64), "city": tf.constant([["oslo"]] * 64)}
    labels = tf.constant([1] * 64)
    one = model.clipped_gradient_sum(_row_slice(x, 1), labels[:1])
    many = model.clipped_gradient_sum(x, labels)
    # 64 identical rows: one shared dropout mask would make the sum exactly 64 times one row's gradient.
    kernel = model.trainable_variables[0]
    assert kernel.shape[-1] == 6
    assert not np.allclose(many[0].numpy(), 64 * one[0].numpy(), rtol=1e-3)
    assert np.all(np.isfinite(many[0].numpy()))


# --- Poisson sampling -----------------------------------------------------------------------------------------


def _rows(count: int) -> Rows:
    return Rows({"x": np.arange(count, dtype=np.float32)}, np.zeros(count, dtype="int64"))


def test_poisson_batches_have_the_planned_rate_and_distinct_rows():
    rows, rate, steps = _rows(2000), 0.05, 400
    batches = list(private.poisson_batches(rows, sample_rate=rate, steps=steps, rng=np.random.default_rng(1)))
    sizes = np.array([len(b) for b in batches])
    assert len(batches) == steps
    assert abs(sizes.mean() - rate * len(rows)) < 4 * np.sqrt(len(rows) * rate * (1 - rate) / steps)
    assert abs(sizes.var() / (len(rows) * rate * (1 - rate)) - 1) < 0.25  # binomial spread, not a fixed size
    assert all(len(np.unique(b.features["x"])) == len(b) for b in batches)
    seen = np.concatenate([b.features["x"] for b in batches])
    assert len(np.unique(seen)) > 0.99 * len(rows)  # every row gets its chances, uniformly


def test_the_pipeline_has_the_plan_steps_per_epoch_including_empty_batches():
    rows = _rows(40)
    plan = {"sample_rate": 0.02, "steps_per_epoch": 50}
    signature = (tf.TensorSpec((None,), tf.float32), tf.TensorSpec((None,), tf.int64))

    def to_batch(batch: Rows):
        return batch.features["x"], batch.labels

    dataset = private.poisson_dataset(rows, plan=plan, first_step=0, to_batch=to_batch, signature=signature)
    assert int(dataset.cardinality()) == 50
    for _ in range(2):  # Keras starts it once per epoch
        sizes = [int(x.shape[0]) for x, _ in dataset]
        assert len(sizes) == 50 and 0 in sizes  # P(empty) = 0.98^40 = 0.45 per step
    resumed = private.poisson_dataset(rows, plan=plan, first_step=20, to_batch=to_batch, signature=signature)
    assert int(resumed.cardinality()) == 30 and len(list(resumed)) == 30  # a resumed epoch: its remaining steps


def test_two_pipelines_sample_differently_whatever_the_seed():
    keras.utils.set_random_seed(9)
    first = [len(b) for b in private.poisson_batches(_rows(500), sample_rate=0.1, steps=30, rng=private.sampling_rng())]
    keras.utils.set_random_seed(9)
    second = [
        len(b) for b in private.poisson_batches(_rows(500), sample_rate=0.1, steps=30, rng=private.sampling_rng())
    ]
    assert first != second


# --- through the trainer ----------------------------------------------------------------------------------------


JOBS = {
    # template: (sample kind, label, feature columns, params, instances to serve)
    "sequence_ctr": ("ctr", "clicked", ["item_sequence"], TINY_CTR, ["1 2 3", "4 5 6 7 8 9 10 11 12"]),
    "text_classifier": (
        "sentiment",
        "sentiment",
        ["headline"],
        {
            "epochs": 1,
            "batch_size": 32,
            "max_tokens": 300,
            "sequence_length": 12,
            "embedding_dim": 8,
            "encoder": "bilstm",
            "lstm_units": 4,
        },
        ["公司上半年利润增长", "营收下滑"],
    ),
    "tabular_classifier": (
        "tabular",
        "defaulted",
        ["age", "income", "debt_ratio", "employment", "late_payments"],
        {"epochs": 2, "batch_size": 32, "hidden_units": [8], "dropout": 0.2},
        [
            {"age": 30, "income": 5000.0, "debt_ratio": 0.3, "employment": "salaried", "late_payments": 0},
            {"age": 55, "income": 900.0, "debt_ratio": 1.5, "employment": "unemployed", "late_payments": 5},
        ],
    ),
}


def _train_private(api, template: str, *, rows: int = 300, reference: bool = False) -> TrainingJob:
    """A private job of ``template`` submitted through the API (its plan made by ``training.privacy``), run by
    the trainer here; checks what every private job must show."""
    kind, label, features, params, _ = JOBS[template]
    dataset_id = ready_dataset(api, sample_csv(kind, rows), label=label, name=kind)
    response = submit_job(
        api,
        dataset_id,
        template=template,
        model_name=template.replace("_", "-"),
        label_column=label,
        feature_columns=features,
        params=params,
        privacy={"noise_multiplier": 1.0, "accept_low_utility": True, "reference": reference},
    )
    assert response.status_code == 201, response.json()
    job_id = response.json()["id"]
    plan = TrainingJob.objects.get(pk=job_id).privacy
    assert plan["sampling"] == "poisson" and plan["steps"] == params["epochs"] * plan["steps_per_epoch"]
    dispatch_queued_jobs()
    run_job(job_id=job_id, worker="test")
    job = TrainingJob.objects.get(pk=job_id)
    assert job.status == "succeeded", job.error_traceback[-3000:]
    expected = {"epsilon": plan["epsilon"], "delta": plan["delta"], "steps": plan["steps"]}
    if reference:
        expected["reference"] = job.metrics["privacy"]["reference"]
    assert job.metrics["privacy"] == expected
    version = ModelVersion.objects.get(job=job)
    learned = templates.get(template).learned_from_data(job.params)
    assert version.manifest["privacy"] == privacy.statement(plan=plan, learned_from_data=learned) | (
        {"reference": expected["reference"]} if reference else {}
    )
    # What the preprocessing learned from the rows is named as outside the guarantee, with the label names.
    not_covered = version.manifest["privacy"]["not_covered"]
    assert not_covered[: len(learned)] == list(learned) and any("label names" in item for item in not_covered)
    lines = [line["message"] for line in api.get(f"/api/v1/jobs/{job_id}/logs").json()["lines"]]
    assert f"private training took {plan['steps']} steps, as planned" in lines
    return job


@pytest.mark.django_db(transaction=True)  # the serving server reads the registry from its own threads
def test_a_private_job_of_each_template_trains_publishes_its_statement_and_serves(api_a, tenant_a):
    trained = {template: _train_private(api_a, template) for template in JOBS}
    with serving_server() as (base, _):
        for template, job in trained.items():
            instances = JOBS[template][4]
            status, body, _ = call(
                base, "POST", f"/v1/models/{job.model_name}:predict", {"instances": instances}, tenant_a.raw_key
            )
            assert status == 200, body
            assert len(body["predictions"]) == len(instances)
            # Private versions explain too (no global explanations: those would publish validation rows).
            status, body, _ = call(
                base, "POST", f"/v1/models/{job.model_name}:explain", {"instances": instances}, tenant_a.raw_key
            )
            assert status == 200, body
            for explanation in body["explanations"]:
                assert explanation["attributions"][0]["approximation_error"] <= 0.05
            assert "global_explanations" not in ModelVersion.objects.get(job=job).manifest
    # The private text model hashes its tokens: no vocabulary of the training rows is in it (so it is served by
    # TensorFlow: the compiled form reads a vocabulary), and its statement does not name one.
    text = ModelVersion.objects.get(job=trained["text_classifier"]).manifest
    assert text["runtime"] == "tensorflow" and "HashedTokens" in text["runtime_reason"]
    assert not any("vocabulary" in item for item in text["privacy"]["not_covered"])


@pytest.mark.django_db
def test_a_reference_is_trained_beside_and_reported_not_published(api_a):
    job = _train_private(api_a, "tabular_classifier", reference=True)
    reference = job.metrics["privacy"]["reference"]["metrics"]
    assert set(reference) >= {"accuracy", "task"} and reference["task"] == job.metrics["task"]
    manifest = ModelVersion.objects.get(job=job).manifest
    assert manifest["privacy"]["reference"] == {"metrics": reference}
    assert ModelVersion.objects.filter(job=job).count() == 1  # only the private model is published
    logs = api_a.get(f"/api/v1/jobs/{job.id}/logs").json()["lines"]
    assert any(line["message"].startswith("non-private reference (not published) evaluated:") for line in logs)


@pytest.mark.django_db
@pytest.mark.parametrize("private_job", [True, False], ids=["private", "not_private"])
def test_a_job_resumed_mid_epoch_keeps_its_step_count(api_a, settings, monkeypatch, private_job):
    """Resumed a few steps into its first epoch, a job trains exactly the steps it would have without the break
    (a private job: the plan's; any job: epochs x batches per epoch, none counted twice or dropped later)."""
    settings.TRAINING_CHECKPOINT_SECONDS = 0
    settings.TRAINING_OUTAGE_WAIT_SECONDS = 0
    monkeypatch.setattr(run, "HEARTBEAT_EVERY_SECONDS", 0.05)
    rows, params = 600, TINY_CTR | {"epochs": 2, "batch_size": 16}
    dataset_id = ready_dataset(api_a, sample_csv("ctr", rows), label="clicked")
    job_id = submit_job(api_a, dataset_id, params=params).json()["id"]
    plan = make_plan(train_rows=480, batch_size=16, epochs=2)
    if private_job:
        set_plan(job_id, plan)
    dispatch_queued_jobs()
    save = run.save_checkpoint
    lost: list[tuple[int, int]] = []

    def save_then_lose_storage(job, model, epoch, step=0):
        save(job, model, epoch, step)
        if step >= 2 and not lost:  # storage goes away after the first mid-epoch checkpoint past a step or two
            lost.append((epoch, step))
            raise ClientError({"Error": {"Code": "503"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutObject")

    monkeypatch.setattr(run, "save_checkpoint", save_then_lose_storage)
    run_job(job_id=job_id, worker="gpu-host")
    job = TrainingJob.objects.get(pk=job_id)
    assert job.status == "queued", job.error
    epoch, step = lost[0]
    steps_per_epoch = plan["steps_per_epoch"] if private_job else -(-run.load_job_data(job).train_rows // 16)
    assert epoch == 0 and 2 <= step < steps_per_epoch
    assert json.loads(storage.get_bytes(checkpoint_prefix(job) + "latest.json"))["step"] == step

    dispatch_queued_jobs()
    run_job(job_id=job_id, worker="gpu-host")
    job = TrainingJob.objects.get(pk=job_id)
    assert job.status == "succeeded", job.error_traceback[-3000:]
    lines = [line["message"] for line in api_a.get(f"/api/v1/jobs/{job_id}/logs").json()["lines"]]
    assert f"resuming from the checkpoint after epoch 0 and {step} batches of the next" in lines
    trained = int(run.last_checkpoint(job)[0].optimizer.iterations.numpy())
    assert trained == 2 * steps_per_epoch
    if private_job:
        assert trained == plan["steps"] == job.metrics["privacy"]["steps"]
        assert f"private training took {plan['steps']} steps, as planned" in lines


@pytest.mark.django_db
def test_two_private_jobs_with_the_same_seed_end_with_different_weights(api_a):
    first, second = (_train_private(api_a, "tabular_classifier", rows=200) for _ in range(2))
    assert first.seed == second.seed
    weights = [run.last_checkpoint(job)[0].get_weights() for job in (first, second)]
    assert len(weights[0]) == len(weights[1])
    assert not all(np.allclose(a, b) for a, b in zip(*weights, strict=True))  # noise and sampling are not the seed's


def test_an_empty_batch_is_a_noise_only_step():
    keras.utils.set_random_seed(10)
    model = private.make_private(_tabular(), {"clip_norm": 1.0, "noise_multiplier": 1.0, "expected_batch_size": 4})
    empty = {"age": tf.zeros((0, 1), tf.float32), "city": tf.zeros((0, 1), tf.string)}
    before = [v.numpy().copy() for v in model.trainable_variables]
    logs = model.train_on_batch(empty, tf.zeros((0,), tf.int64), return_dict=True)
    assert int(model.optimizer.iterations.numpy()) == 1 and all(np.isfinite(list(logs.values())))
    assert all(not np.allclose(a, b.numpy()) for a, b in zip(before, model.trainable_variables, strict=True))
