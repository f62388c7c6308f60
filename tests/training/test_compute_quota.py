"""Spending past the plan: runtime budgets reserved at submission, enforced at dispatch, at claim and while a job
runs; compute seconds per attempt (a killed attempt charged from its heartbeats, a retried write counted once);
and failures tenants see as a code and a plain message, never exception text."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from core import storage
from tenants import services as tenant_services
from tests.conftest import client_for
from tests.support.dashboard import signed_in
from tests.support.jobs import TINY_CTR, capture_tasks, job_ids, ready_dataset, sample_csv, submit_job
from training import services as job_services
from training.models import TrainingJob
from training.trainer.run import checkpoint_prefix, run_job
from usage import services as usage_services

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch) -> list[dict]:
    """Jobs the dispatcher sends to the gpu queue (recorded, not run; ``job_ids`` lists them), and dispatch
    requests (recorded, not sent: the tests dispatch themselves)."""
    return capture_tasks(monkeypatch, job_services.TRAIN_MODEL, job_services.DISPATCH_JOBS)


def _plan(tenant, **limits):
    """Change the tenant's own plan (a copy of the default one the first time, so other tenants keep theirs)."""
    from tenants.models import Plan

    plan = tenant.plan
    if not plan.slug.startswith("own-"):
        plan = Plan.objects.create(
            slug=f"own-{tenant.slug}"[:50],
            name=f"{tenant.slug}'s plan",
            **{
                f.name: getattr(tenant.plan, f.name)
                for f in Plan._meta.concrete_fields
                if f.name not in {"id", "slug", "name"}
            },
        )
        tenant.plan = plan
        tenant.save(update_fields=["plan"])
    for name, value in limits.items():
        setattr(plan, name, value)
    plan.save()
    return plan


def _quotas(api) -> dict:
    return {q["name"]: q for q in api.get("/api/v1/quotas").json()["quotas"]}


def test_twenty_long_jobs_under_a_60s_quota_are_not_all_dispatched(api_a, tenant_a, sent):
    _plan(tenant_a.tenant, compute_seconds_per_month=60, max_concurrent_jobs=50)
    dataset_id = ready_dataset(api_a, sample_csv("ctr", 60), label="clicked")
    answers = [submit_job(api_a, dataset_id, params=TINY_CTR | {"epochs": 200}) for _ in range(20)]

    accepted = [a.json() for a in answers if a.status_code == 201]
    refused = [a for a in answers if a.status_code != 201]
    assert len(accepted) == 1 and accepted[0]["max_runtime_seconds"] == 60  # the default, capped by what remains
    assert {(a.status_code, a.json()["error"]["code"]) for a in refused} == {(403, "compute_quota_exceeded")}
    assert refused[0].json()["error"]["details"]["compute_seconds_available"] == 0
    assert _quotas(api_a)["compute_seconds_reserved"]["used"] == 60

    job_services.dispatch_queued_jobs()
    assert job_ids(sent) == [accepted[0]["id"]]

    # An explicit budget is held to what remains too, and validated.
    assert submit_job(api_a, dataset_id, max_runtime_seconds=1).json()["error"]["code"] == "compute_quota_exceeded"
    assert submit_job(api_a, dataset_id, max_runtime_seconds=0).status_code == 400


def test_queued_jobs_beyond_the_budget_are_not_dispatched(api_a, tenant_a, sent):
    _plan(tenant_a.tenant, compute_seconds_per_month=60, max_concurrent_jobs=1)
    dataset_id = ready_dataset(api_a, sample_csv("ctr", 60), label="clicked")
    jobs = [submit_job(api_a, dataset_id, max_runtime_seconds=20).json()["id"] for _ in range(3)]
    assert job_services.dispatch_queued_jobs() == [jobs[0]]
    first = job_services.claim_job(job_id=jobs[0], worker="gpu-host:1")
    job_services.finish_job(job=first, status="succeeded", compute_seconds=20.0, device="cpu")

    _plan(tenant_a.tenant, compute_seconds_per_month=20)  # the plan changed: this month's compute is spent
    assert job_services.dispatch_queued_jobs() == []
    assert job_ids(sent) == [jobs[0]]
    for job_id in jobs[1:]:
        body = api_a.get(f"/api/v1/jobs/{job_id}").json()
        assert body["status"] == "failed" and body["error_code"] == "compute_quota_exceeded", body
        assert body["attempts"] == 0
    assert _quotas(api_a)["compute_seconds_this_month"]["used"] == 20


def test_a_suspended_tenants_queued_job_is_not_dispatched_or_run(api_a, tenant_a, sent):
    dataset_id = ready_dataset(api_a, sample_csv("ctr", 60), label="clicked")
    running_id = submit_job(api_a, dataset_id).json()["id"]
    assert job_services.dispatch_queued_jobs() == [running_id]
    running = job_services.claim_job(job_id=running_id, worker="gpu-host:1")
    waiting = submit_job(api_a, dataset_id).json()["id"]
    on_its_way = submit_job(api_a, dataset_id).json()["id"]
    TrainingJob.objects.filter(pk=on_its_way).update(dispatched_at=timezone.now())  # sent before the suspension

    tenant_services.set_tenant_status(tenant=tenant_a.tenant, status="suspended")
    assert job_services.heartbeat(job=running, progress={}) == "tenant_suspended"  # the trainer stops at once
    assert job_services.dispatch_queued_jobs() == []
    run_job(job_id=on_its_way, worker="gpu-host")  # the message already sent reaches a worker: nothing runs
    for job_id in (waiting, on_its_way):
        job = TrainingJob.objects.get(pk=job_id)
        assert (job.status, job.attempts, job.attempt_rows.count()) == ("queued", 0, 0)

    tenant_services.set_tenant_status(tenant=tenant_a.tenant, status="active")
    job_services.finish_job(job=running, status="succeeded", compute_seconds=1.0, device="cpu")
    assert sorted(job_services.dispatch_queued_jobs()) == sorted([waiting, on_its_way])


@pytest.mark.parametrize("who_notices", ["reaper", "next_worker"])
def test_a_killed_attempt_is_charged_from_its_last_heartbeat(api_a, tenant_a, sent, monkeypatch, who_notices):
    dataset_id = ready_dataset(api_a, sample_csv("ctr", 60), label="clicked")
    job_id = submit_job(api_a, dataset_id).json()["id"]
    assert job_services.dispatch_queued_jobs() == [job_id]

    real_now = timezone.now()
    started = real_now - timedelta(hours=2)
    monkeypatch.setattr(timezone, "now", lambda: started)
    job = job_services.claim_job(job_id=job_id, worker="gpu-host:4242")
    for minutes in (10, 30, 50):  # the monitor beats while the attempt trains ...
        monkeypatch.setattr(timezone, "now", lambda minutes=minutes: started + timedelta(minutes=minutes))
        assert job_services.heartbeat(job=job, progress={"epoch": 1}) == "running"
    monkeypatch.undo()  # ... then the worker is killed (SIGKILL, power loss): nothing more is written

    if who_notices == "reaper":
        assert job_services.requeue_stale_jobs() == [job_id]
    else:  # the redelivered message reaches another worker
        assert job_services.claim_job(job_id=job_id, worker="other-host:7") is not None

    body = api_a.get(f"/api/v1/jobs/{job_id}").json()
    assert body["compute_seconds"] == pytest.approx(3000.0)  # 50 minutes: start to last heartbeat
    last_beat = started + timedelta(minutes=50)
    same_month = (last_beat.year, last_beat.month) == (real_now.year, real_now.month)
    assert _quotas(api_a)["compute_seconds_this_month"]["used"] == pytest.approx(3000.0 if same_month else 0.0)
    day = last_beat.date()
    usage_services.aggregate_usage(day=day, tenant=tenant_a.tenant)
    usage = api_a.get(f"/api/v1/usage?from={day}&to={day}&group_by=kind").json()["results"]
    assert {r["kind"]: float(r["quantity"]) for r in usage}.get("cpu_seconds") == pytest.approx(3000.0)


def test_a_retried_compute_seconds_write_counts_once(api_a, tenant_a, sent):
    dataset_id = ready_dataset(api_a, sample_csv("ctr", 60), label="clicked")
    job_id = submit_job(api_a, dataset_id).json()["id"]
    job_services.dispatch_queued_jobs()
    job = job_services.claim_job(job_id=job_id, worker="gpu-host:1")
    # The first write committed but its answer was lost with the connection; resilient() makes it again.
    for _ in range(2):
        job_services.finish_job(job=job, status="succeeded", compute_seconds=42.5, device="cpu")
    assert api_a.get(f"/api/v1/jobs/{job_id}").json()["compute_seconds"] == 42.5
    assert _quotas(api_a)["compute_seconds_this_month"]["used"] == 42.5

    # The same for the seconds of an attempt requeued after a transient error.
    second = submit_job(api_a, dataset_id).json()["id"]
    job_services.dispatch_queued_jobs()
    job = job_services.claim_job(job_id=second, worker="gpu-host:1")
    for _ in range(2):
        job_services.record_attempt_seconds(job=job, seconds=7.0)
    job_services.requeue_after_error(job=job, reason="storage unavailable", compute_seconds=7.0)
    assert api_a.get(f"/api/v1/jobs/{second}").json()["compute_seconds"] == 7.0


def test_a_running_job_stops_when_its_budget_runs_out_and_resumes_after_a_retry(api_a, tenant_a, sent, monkeypatch):
    # Only the epoch-end beat (after the checkpoint) checks, so the stop lands at a known place.
    monkeypatch.setattr("training.trainer.run.HEARTBEAT_EVERY_SECONDS", 60.0)
    dataset_id = ready_dataset(api_a, sample_csv("ctr", 120), label="clicked")
    response = submit_job(api_a, dataset_id, params=TINY_CTR | {"epochs": 3}, max_runtime_seconds=1)
    assert response.status_code == 201, response.json()
    job_id = response.json()["id"]

    run_job(job_id=job_id, worker="gpu-host")  # loading and the first epoch alone take longer than a second
    body = api_a.get(f"/api/v1/jobs/{job_id}").json()
    assert body["status"] == "failed" and body["error_code"] == "compute_quota_exceeded", body
    assert body["error_message"] == job_services.ERROR_MESSAGES["compute_quota_exceeded"]
    assert body["compute_seconds"] >= 1
    epochs = api_a.get(f"/api/v1/jobs/{job_id}/metrics").json()["epochs"]
    assert [e["epoch"] for e in epochs] == [1]
    job = TrainingJob.objects.get(pk=job_id)
    assert json.loads(storage.get_bytes(checkpoint_prefix(job) + "latest.json"))["epoch"] == 1  # kept

    # An operator retries it (after the plan changed): it resumes from that checkpoint and finishes.
    assert job_services.retry_jobs(job_ids=[job_id]).requeued == 1
    assert job_services.dispatch_queued_jobs() == [job_id]
    run_job(job_id=job_id, worker="gpu-host")
    body = api_a.get(f"/api/v1/jobs/{job_id}").json()
    assert body["status"] == "succeeded" and body["attempts"] == 2 and body["error_code"] == ""
    lines = [line["message"] for line in api_a.get(f"/api/v1/jobs/{job_id}/logs").json()["lines"]]
    assert "resuming from the checkpoint after epoch 1" in lines
    attempts = list(TrainingJob.objects.get(pk=job_id).attempt_rows.values_list("compute_seconds", flat=True))
    assert len(attempts) == 2 and body["compute_seconds"] == pytest.approx(sum(attempts))


SECRET = "connection to db-internal.prod:5432 refused; password=hunter2"


@pytest.mark.parametrize(
    "where, code",
    [("training.trainer.run.load", "invalid_data"), ("training.trainer.run.restore_or_build", "training_failed")],
)
def test_a_failed_jobs_answer_has_no_exception_text(api_a, tenant_a, sent, monkeypatch, where, code):
    def explode(*args, **kwargs):
        raise RuntimeError(SECRET)

    monkeypatch.setattr(where, explode)
    dataset_id = ready_dataset(api_a, sample_csv("ctr", 60), label="clicked")
    job_id = submit_job(api_a, dataset_id).json()["id"]
    run_job(job_id=job_id, worker="gpu-host")

    body = api_a.get(f"/api/v1/jobs/{job_id}").json()
    answers = [
        json.dumps(body),
        json.dumps(api_a.get("/api/v1/jobs").json()),
        json.dumps(api_a.get(f"/api/v1/jobs/{job_id}/logs").json()),
        signed_in(tenant_a.owner, tenant_a.tenant).get(f"/jobs/{job_id}/").content.decode(),
    ]
    for answer in answers:
        assert "hunter2" not in answer and "RuntimeError" not in answer and "db-internal" not in answer
    assert body["status"] == "failed" and body["error_code"] == code
    assert body["error_message"] == job_services.ERROR_MESSAGES[code]
    assert code in answers[-1]  # the dashboard's job page shows the code
    assert SECRET in TrainingJob.objects.get(pk=job_id).error_traceback  # operators keep the details


def test_another_tenants_budget_is_its_own(api_a, tenant_a, tenant_b, sent):
    """One tenant spending its quota changes nothing for another."""
    _plan(tenant_a.tenant, compute_seconds_per_month=60)
    dataset_a = ready_dataset(api_a, sample_csv("ctr", 60), label="clicked")
    assert submit_job(api_a, dataset_a).status_code == 201
    assert submit_job(api_a, dataset_a).status_code == 403
    api_b = client_for(tenant_b.raw_key)
    dataset_b = ready_dataset(api_b, sample_csv("ctr", 60), label="clicked")
    assert submit_job(api_b, dataset_b).json()["max_runtime_seconds"] == 3600


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_training_is_charged_for_the_time_it_ran(api_a, tenant_a):
    """A real worker process SIGKILLed mid-epoch: its attempt is charged up to its last heartbeat, the job resumes,
    and the job's seconds are the sum of its attempts."""
    import os
    import signal
    import time

    from tests.support.workers import celery_worker
    from training.models import JobLogLine

    def wait_for(predicate, timeout: float, message: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := predicate():
                return value
            time.sleep(0.2)
        raise AssertionError(message)

    slow = {"epochs": 4, "batch_size": 8, "max_len": 30, "embedding_dim": 16, "conv_filters": 16, "lstm_units": 16}
    with celery_worker("gpu,cpu,default"):
        dataset_id = ready_dataset(api_a, sample_csv("ctr", 400, seed=5), label="clicked")
        job_id = submit_job(api_a, dataset_id, params=slow).json()["id"]
        wait_for(
            lambda: JobLogLine.objects.filter(job_id=job_id, message__startswith="epoch 2/").exists(), 240, "no epoch 2"
        )
        os.kill(int(TrainingJob.objects.get(pk=job_id).worker.rpartition(":")[2]), signal.SIGKILL)
        done = wait_for(
            lambda: (j := TrainingJob.objects.get(pk=job_id)).status in TrainingJob.TERMINAL and j, 240, "not done"
        )
    assert done.status == "succeeded", done.error_traceback[-2000:]
    killed, resumed = done.attempt_rows.order_by("number")
    assert killed.outcome == "lost" and killed.ended_at == killed.heartbeat_at
    assert killed.compute_seconds == pytest.approx((killed.heartbeat_at - killed.started_at).total_seconds())
    assert killed.compute_seconds > 1  # two epochs ran before the kill
    assert resumed.outcome == "succeeded"
    assert done.compute_seconds == pytest.approx(killed.compute_seconds + resumed.compute_seconds)
    assert api_a.get(f"/api/v1/jobs/{job_id}").json()["compute_seconds"] == pytest.approx(done.compute_seconds)


def test_one_tenants_pile_of_old_jobs_never_keeps_another_tenants_job_from_dispatch(
    api_a, api_b, tenant_a, tenant_b, sent, settings
):
    """Tenant A queues more old jobs than the dispatcher reads at once and sits at its concurrency limit (then is
    suspended): B's one job still goes, because candidates are each tenant's oldest few, not the oldest overall."""
    settings.TRAINING_DISPATCH_BATCH = 5
    _plan(tenant_a.tenant, max_concurrent_jobs=1)
    dataset_a = ready_dataset(api_a, sample_csv("ctr", 60), label="clicked")
    piled = [submit_job(api_a, dataset_a, max_runtime_seconds=1).json()["id"] for _ in range(8)]
    assert job_services.dispatch_queued_jobs() == [piled[0]]  # A at its limit from here on
    dataset_b = ready_dataset(api_b, sample_csv("ctr", 60), label="clicked")
    theirs = submit_job(api_b, dataset_b).json()["id"]

    assert job_services.dispatch_queued_jobs() == [theirs]

    tenant_services.set_tenant_status(tenant=tenant_a.tenant, status="suspended")
    TrainingJob.objects.filter(pk=piled[0]).update(status="succeeded")
    other = submit_job(api_b, dataset_b).json()["id"]
    assert job_services.dispatch_queued_jobs() == [other]
    assert TrainingJob.objects.filter(pk__in=piled[1:], status="queued", dispatched_at=None).count() == 7


def test_two_dispatchers_at_once_never_send_past_the_plans_concurrency(api_a, tenant_a, sent):
    """A dispatcher that read the candidates before another sent one re-counts under the tenant's lock."""
    _plan(tenant_a.tenant, max_concurrent_jobs=1)
    dataset_id = ready_dataset(api_a, sample_csv("ctr", 60), label="clicked")
    first, second = (submit_job(api_a, dataset_id, max_runtime_seconds=1).json()["id"] for _ in range(2))
    stale_view = TrainingJob.objects.select_related("tenant__plan").get(pk=second)
    assert job_services.dispatch_queued_jobs() == [first]

    assert job_services._claim_for_dispatch(stale_view) is False  # what a racing dispatcher would try
    assert TrainingJob.objects.get(pk=second).dispatched_at is None
