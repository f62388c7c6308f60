"""Private jobs through the API and a dataset's privacy budget: the plan on the job, per-example gradient memory,
budgets that compose and refuse, shares given back by jobs that never started, and hostile input changing nothing.

No training runs here: jobs are created, claimed and ended through the services a worker would call.
"""

from __future__ import annotations

import json
import threading

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.errors import ConflictError
from datasets.models import Dataset
from tenants.models import AuditEvent, Role
from tests.conftest import client_for
from tests.support.factories import make_key
from tests.support.jobs import TINY_CTR, ready_dataset, sample_csv, submit_job
from training import privacy, services, templates
from training.models import TrainingJob

pytestmark = pytest.mark.django_db

ROWS = 400  # 320 planned training rows at the default 0.2 validation split
PRIVATE = {"noise_multiplier": 1.0}  # batch 64: noise ratio 1/64, under the 0.02 limit


@pytest.fixture
def dataset_id(api_a) -> str:
    return ready_dataset(api_a, sample_csv("ctr", ROWS), label="clicked")


def private_job(api, dataset_id: str, **privacy_request):
    return submit_job(api, dataset_id, privacy=PRIVATE | privacy_request)


def one_job_epsilon(delta: float, sigma: float = 1.0) -> float:
    return privacy.epsilon(sample_rate=64 / 320, noise_multiplier=sigma, steps=5, delta=delta, accountant="pld")


def set_budget(api, dataset_id: str, epsilon, delta):
    return api.put(f"/api/v1/datasets/{dataset_id}/privacy", {"epsilon": epsilon, "delta": delta}, format="json")


def test_a_private_job_carries_its_plan(api_a, dataset_id):
    response = private_job(api_a, dataset_id, reference=True)
    assert response.status_code == 201, response.json()
    plan = response.json()["privacy"]
    assert plan["planned_train_rows"] == 320 and plan["expected_batch_size"] == 64
    assert plan["sample_rate"] == 0.2 and plan["steps_per_epoch"] == 5 and plan["steps"] == 5
    assert plan["delta"] == 1e-5 and plan["accountant"] == "pld" and plan["reference"] is True
    assert plan["epsilon"] == one_job_epsilon(1e-5) and plan["target_epsilon"] is None
    # The noise is fine, but 5 steps is few: created, with a warning that says so.
    assert plan["warning"].startswith("Only 5 private steps (1 epochs of 5)")
    job = TrainingJob.objects.get(pk=response.json()["id"])
    assert job.privacy == plan
    lines = [line["message"] for line in api_a.get(f"/api/v1/jobs/{job.pk}/logs").json()["lines"]]
    assert any(line.startswith("private: epsilon") for line in lines)
    assert (
        AuditEvent.objects.get(action="job.create", target_id=str(job.pk)).details["privacy"]["epsilon"]
        == (plan["epsilon"])
    )

    plain = submit_job(api_a, dataset_id).json()
    assert plain["privacy"] == {}


def test_per_example_gradients_count_toward_the_memory_limit(api_a, tenant_a, dataset_id):
    plain = submit_job(api_a, dataset_id).json()
    private = private_job(api_a, dataset_id).json()
    estimate, _ = templates.TEMPLATES["sequence_ctr"].estimate_memory(
        plain["params"], columns={"item_sequence": {"type": "id_sequence", **_stats(dataset_id)}}, classes=2
    )
    # A small model: the batch's 64 per-example gradients fit one of the trainer's chunks.
    assert private["estimated_memory_bytes"] == plain["estimated_memory_bytes"] + estimate.parameters * 64 * 4

    # 16M parameters (64 MB per example): the trainer holds 4 examples' gradients at once (256 MiB), not 64 (4 GiB).
    big = TINY_CTR | {"vocab_size": 1_000_000, "embedding_dim": 16}
    plain_big = submit_job(api_a, dataset_id, params=big).json()
    private_big = submit_job(api_a, dataset_id, params=big, privacy=PRIVATE).json()
    parameters, _ = templates.TEMPLATES["sequence_ctr"].estimate_memory(
        plain_big["params"], columns={"item_sequence": {"type": "id_sequence", **_stats(dataset_id)}}, classes=2
    )
    extra = privacy.per_example_gradient_bytes(parameters=parameters.parameters, batch_size=64)
    assert extra == 4 * parameters.parameters * 4
    assert private_big["estimated_memory_bytes"] == plain_big["estimated_memory_bytes"] + extra

    plan = tenant_a.tenant.plan  # a limit the plain job fits and the private one does not
    plan.max_job_memory_bytes = plain_big["estimated_memory_bytes"] + extra // 2
    plan.save(update_fields=["max_job_memory_bytes"])
    before = TrainingJob.objects.count()
    assert submit_job(api_a, dataset_id, params=big).status_code == 201
    refused = submit_job(api_a, dataset_id, params=big, privacy=PRIVATE)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "job_memory_exceeded"
    assert "one gradient per example" in refused.json()["error"]["message"]
    assert TrainingJob.objects.count() == before + 1


def _stats(dataset_id: str) -> dict:
    return Dataset.objects.get(pk=dataset_id).stats["columns"]["item_sequence"]


def test_a_low_utility_job_is_refused_or_created_with_a_warning(api_a, dataset_id):
    refused = private_job(api_a, dataset_id, noise_multiplier=5.0)
    error = refused.json()["error"]
    assert refused.status_code == 400 and error["code"] == "privacy_low_utility"
    assert error["details"]["noise_ratio"] == 5.0 / 64 and "larger batch_size" in error["message"]
    assert TrainingJob.objects.count() == 0

    accepted = private_job(api_a, dataset_id, noise_multiplier=5.0, accept_low_utility=True)
    assert accepted.status_code == 201
    assert "more rows" in accepted.json()["privacy"]["warning"]
    lines = [line["message"] for line in api_a.get(f"/api/v1/jobs/{accepted.json()['id']}/logs").json()["lines"]]
    assert any(line.startswith("warning: The noise") for line in lines)


def test_too_large_datasets_are_refused_for_private_training(api_a, dataset_id, settings):
    settings.PRIVACY_MAX_TRAIN_ROWS = 100
    response = private_job(api_a, dataset_id)
    assert response.status_code == 400 and response.json()["error"]["code"] == "privacy_dataset_too_large"
    assert response.json()["error"]["details"] == {"planned_train_rows": 320, "max_train_rows": 100}


HOSTILE = [
    [],
    "yes",
    7,
    {},
    {"target_epsilon": "1"},
    {"target_epsilon": True},
    {"target_epsilon": 10**400},
    {"target_epsilon": -1},
    {"noise_multiplier": 10**30},
    {"noise_multiplier": 0.01},
    {"noise_multiplier": {"value": 1}},
    {"noise_multiplier": 1, "delta": 0.5},
    {"noise_multiplier": 1, "delta": -1e-5},
    {"noise_multiplier": 1, "clip_norm": "1"},
    {"noise_multiplier": 1, "accountant": "moments"},
    {"noise_multiplier": 1, "reference": "true"},
    {"noise_multiplier": 1, "epsilon": 1},
    {"noise_multiplier": 1, "__proto__": {}},
]


@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda value: json.dumps(value)[:40])
def test_hostile_privacy_objects_are_400_and_create_nothing(api_a, dataset_id, hostile):
    response = submit_job(api_a, dataset_id, privacy=hostile)
    assert response.status_code == 400, response.json()
    assert response.json()["error"]["code"] in {"invalid_privacy", "validation_error"}
    assert TrainingJob.objects.count() == 0


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "[]", '"1e-6"'])
def test_non_numbers_in_raw_json_are_400(api_a, dataset_id, literal):
    """Non-standard JSON constants, and numbers that decode to infinity (1e400), in the privacy object or as it."""
    body = (
        f'{{"dataset": "{dataset_id}", "template": "sequence_ctr", "model_name": "ctr", "label_column": "clicked", '
        f'"params": {json.dumps(TINY_CTR)}, "privacy": {{"noise_multiplier": 1, "delta": {literal}}}}}'
    )
    response = api_a.post("/api/v1/jobs", body, content_type="application/json")
    assert response.status_code == 400 and TrainingJob.objects.count() == 0
    whole = body.replace('{"noise_multiplier": 1, "delta": ' + literal + "}", literal)
    assert api_a.post("/api/v1/jobs", whole, content_type="application/json").status_code == 400
    assert TrainingJob.objects.count() == 0


def test_another_tenants_dataset_is_unknown_to_a_private_job(api_a, api_b, dataset_id):
    response = private_job(api_b, dataset_id)
    assert response.status_code == 400 and response.json()["error"]["code"] == "unknown_dataset"
    assert TrainingJob.objects.count() == 0


def test_the_privacy_endpoint_is_404_for_another_tenant(api_a, api_b, dataset_id):
    set_budget(api_a, dataset_id, 5.0, 1e-5)
    assert api_b.get(f"/api/v1/datasets/{dataset_id}/privacy").status_code == 404
    response = set_budget(api_b, dataset_id, None, None)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert Dataset.objects.get(pk=dataset_id).privacy_budget_epsilon == 5.0
    assert api_a.get("/api/v1/datasets/00000000-0000-0000-0000-000000000000/privacy").status_code == 404


def test_setting_a_budget_needs_an_admin_with_the_write_scope(tenant_a, dataset_id):
    reader = client_for(make_key(tenant_a.tenant, scopes=("read",)).raw_key)
    member = client_for(make_key(tenant_a.tenant, role=Role.MEMBER).raw_key)
    assert reader.get(f"/api/v1/datasets/{dataset_id}/privacy").status_code == 200
    assert set_budget(reader, dataset_id, 5.0, 1e-5).json()["error"]["code"] == "missing_scope"
    assert set_budget(member, dataset_id, 5.0, 1e-5).json()["error"]["code"] == "role_required"
    assert Dataset.objects.get(pk=dataset_id).privacy_budget_epsilon is None


@pytest.mark.parametrize(
    "body",
    [
        {"epsilon": 5.0},
        {"epsilon": 5.0, "delta": 1e-5, "accountant": "pld"},
        {"epsilon": 5.0, "delta": None},
        {"epsilon": None, "delta": 1e-5},
        {"epsilon": "5", "delta": 1e-5},
        {"epsilon": True, "delta": 1e-5},
        {"epsilon": 0, "delta": 1e-5},
        {"epsilon": -1, "delta": 1e-5},
        {"epsilon": 1000, "delta": 1e-5},
        {"epsilon": 5.0, "delta": 1 / ROWS},  # delta must be below 1/rows
        {"epsilon": 5.0, "delta": 0},
        {"epsilon": 5.0, "delta": 1e-300},
        [],
    ],
    ids=lambda body: json.dumps(body)[:50],
)
def test_budget_put_validation(api_a, dataset_id, body):
    response = api_a.put(f"/api/v1/datasets/{dataset_id}/privacy", body, format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["error"]["code"] in {"invalid_privacy_budget", "validation_error"}
    assert Dataset.objects.get(pk=dataset_id).privacy_budget_epsilon is None


def test_budgets_compose_refuse_and_are_shown(api_a, dataset_id):
    delta = 1e-5
    single = one_job_epsilon(delta)
    two = privacy.composed_epsilon(plans=[_plan(), _plan()], delta=delta, accountant="pld")
    assert single < two < 2 * single
    budget = two * 1.01  # room for exactly two such jobs
    shown = set_budget(api_a, dataset_id, budget, delta).json()
    assert shown["budget"] == {"epsilon": budget, "delta": delta} and shown["spent_epsilon"] == 0.0
    assert AuditEvent.objects.filter(action="dataset.privacy_budget_set", target_id=dataset_id).count() == 1

    plain = submit_job(api_a, dataset_id)
    assert plain.status_code == 400 and plain.json()["error"]["code"] == "privacy_required"

    first = private_job(api_a, dataset_id).json()
    after_one = api_a.get(f"/api/v1/datasets/{dataset_id}/privacy").json()
    assert after_one["spent_epsilon"] == pytest.approx(single, rel=1e-9)
    assert after_one["remaining_epsilon"] == pytest.approx(budget - single)
    assert [job["job"] for job in after_one["jobs"]] == [first["id"]]
    assert after_one["accountant"] == "pld" and after_one["delta"] == delta

    second = private_job(api_a, dataset_id).json()
    after_two = api_a.get(f"/api/v1/datasets/{dataset_id}/privacy").json()
    assert single < after_two["spent_epsilon"] < 2 * single  # composed: more than one job, less than the sum
    assert after_two["spent_epsilon"] == pytest.approx(two, rel=1e-9)
    assert {job["job"] for job in after_two["jobs"]} == {first["id"], second["id"]}

    refused = private_job(api_a, dataset_id)
    error = refused.json()["error"]
    assert refused.status_code == 400 and error["code"] == "privacy_budget_exceeded"
    details = error["details"]
    assert details["spent_epsilon"] == pytest.approx(two) and details["remaining_epsilon"] == pytest.approx(
        budget - two
    )
    assert details["needed_epsilon"] > details["remaining_epsilon"] and details["budget_epsilon"] == budget
    assert TrainingJob.objects.count() == 2

    # The budget cannot go below what is spent; it can be raised, and cleared (then plain jobs are allowed).
    below = set_budget(api_a, dataset_id, single, delta)
    assert below.status_code == 400 and below.json()["error"]["code"] == "privacy_budget_below_spent"
    assert set_budget(api_a, dataset_id, 3 * two, delta).status_code == 200
    assert private_job(api_a, dataset_id).status_code == 201
    cleared = set_budget(api_a, dataset_id, None, None).json()
    assert cleared["budget"] is None and cleared["remaining_epsilon"] is None
    assert submit_job(api_a, dataset_id).status_code == 201


def _plan() -> dict:
    return privacy.plan(request=PRIVATE, row_count=ROWS, validation_split=0.2, batch_size=64, epochs=1)


def test_a_job_that_never_started_gives_its_share_back(api_a, dataset_id):
    delta = 1e-5
    set_budget(api_a, dataset_id, one_job_epsilon(delta) * 1.01, delta)
    queued = private_job(api_a, dataset_id).json()
    assert private_job(api_a, dataset_id).json()["error"]["code"] == "privacy_budget_exceeded"

    assert api_a.post(f"/api/v1/jobs/{queued['id']}/cancel").json()["status"] == "cancelled"  # never started
    assert api_a.get(f"/api/v1/datasets/{dataset_id}/privacy").json()["spent_epsilon"] == 0.0
    started = private_job(api_a, dataset_id)
    assert started.status_code == 201

    # Once a worker started it, its epsilon stays spent whatever its end: cancelled, or failed.
    job = services.claim_job(job_id=started.json()["id"], worker="test-host:1")
    assert job is not None and job.started_at is not None
    assert api_a.post(f"/api/v1/jobs/{job.pk}/cancel").json()["status"] == "cancelling"
    services.finish_job(job=job, status=TrainingJob.Status.CANCELLED, compute_seconds=1.0, device="cpu")
    assert TrainingJob.objects.get(pk=job.pk).status == "cancelled"
    shown = api_a.get(f"/api/v1/datasets/{dataset_id}/privacy").json()
    assert shown["spent_epsilon"] == pytest.approx(one_job_epsilon(delta))
    assert [entry["job"] for entry in shown["jobs"]] == [str(job.pk)]
    assert private_job(api_a, dataset_id).json()["error"]["code"] == "privacy_budget_exceeded"


@pytest.mark.django_db(transaction=True)
def test_concurrent_submissions_cannot_both_spend_the_last_share(tenant_a):
    api = client_for(tenant_a.raw_key)
    dataset_id = ready_dataset(api, sample_csv("ctr", ROWS), label="clicked")
    delta = 1e-5
    single = one_job_epsilon(delta)
    two = privacy.composed_epsilon(plans=[_plan(), _plan()], delta=delta, accountant="pld")
    assert set_budget(api, dataset_id, (single + two) / 2, delta).status_code == 200  # room for one job, not two
    statuses: list[int] = []
    barrier = threading.Barrier(2)

    def submit() -> None:
        try:
            barrier.wait()
            statuses.append(private_job(client_for(tenant_a.raw_key), dataset_id).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(statuses) == [201, 400]
    assert TrainingJob.objects.filter(dataset_id=dataset_id).count() == 1


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "1e400", "-1e400"])
def test_non_finite_budgets_in_raw_json_are_400(api_a, dataset_id, literal):
    for body in (f'{{"epsilon": {literal}, "delta": 1e-5}}', f'{{"epsilon": 5, "delta": {literal}}}'):
        response = api_a.put(f"/api/v1/datasets/{dataset_id}/privacy", body, content_type="application/json")
        assert response.status_code == 400, response.json()
    assert Dataset.objects.get(pk=dataset_id).privacy_budget_epsilon is None


# --- the review's findings (issue 17) ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_plan_is_computed_before_the_jobs_transaction(tenant_a, monkeypatch):
    """The accounting runs with no transaction open (no lock held); the budget check runs inside one."""
    api = client_for(tenant_a.raw_key)
    dataset_id = ready_dataset(api, sample_csv("ctr", ROWS), label="clicked")
    seen: dict[str, bool] = {}
    real_plan, real_check = privacy.plan, services._check_privacy_budget

    def plan(**kwargs):
        seen["plan"] = connection.in_atomic_block
        return real_plan(**kwargs)

    def check(**kwargs):
        seen["check"] = connection.in_atomic_block
        return real_check(**kwargs)

    monkeypatch.setattr(services.dp, "plan", plan)
    monkeypatch.setattr(services, "_check_privacy_budget", check)
    assert private_job(api, dataset_id).status_code == 201
    assert seen == {"plan": False, "check": True}


def test_plans_are_memoized_on_their_public_numbers(api_a, dataset_id):
    privacy._calibrated.cache_clear()
    privacy._planned_epsilons.cache_clear()
    first = private_job(api_a, dataset_id, noise_multiplier=None, target_epsilon=8.0).json()["privacy"]
    assert privacy._calibrated.cache_info().misses == 1 and privacy._planned_epsilons.cache_info().misses == 1
    second = private_job(api_a, dataset_id, noise_multiplier=None, target_epsilon=8.0).json()["privacy"]
    assert second == first
    assert privacy._calibrated.cache_info().hits == 1 and privacy._planned_epsilons.cache_info().hits == 1


def _dataset_locks(queries) -> list[str]:
    table = Dataset._meta.db_table
    return [q["sql"] for q in queries if table in q["sql"] and ("FOR UPDATE" in q["sql"] or "FOR KEY" in q["sql"])]


def test_a_dataset_without_a_budget_is_not_locked_for_update(api_a, dataset_id):
    with CaptureQueriesContext(connection) as plain:
        assert submit_job(api_a, dataset_id).status_code == 201
    with CaptureQueriesContext(connection) as private:
        assert private_job(api_a, dataset_id).status_code == 201
    for queries in (plain, private):
        locks = _dataset_locks(queries.captured_queries)
        assert [sql for sql in locks if "FOR UPDATE" in sql] == [] and len(locks) == 1
        assert locks[0].endswith("FOR KEY SHARE")  # shared by submissions; only a budget being set waits for it

    # Cancelled plain jobs never read the rows: the budget can be set, and then the row is locked FOR UPDATE.
    for job in TrainingJob.objects.filter(privacy={}):
        api_a.post(f"/api/v1/jobs/{job.pk}/cancel")
    assert set_budget(api_a, dataset_id, 50.0, 1e-5).status_code == 200
    with CaptureQueriesContext(connection) as budgeted:
        assert private_job(api_a, dataset_id).status_code == 201
    locks = _dataset_locks(budgeted.captured_queries)
    assert len(locks) == 1 and "FOR UPDATE" in locks[0]


def test_a_budget_is_refused_over_plain_jobs_that_read_or_will_read_the_rows(api_a, dataset_id):
    queued = submit_job(api_a, dataset_id).json()
    refused = set_budget(api_a, dataset_id, 5.0, 1e-5)
    error = refused.json()["error"]
    assert refused.status_code == 409 and error["code"] == "privacy_budget_compromised"
    assert error["details"]["jobs"] == [{"job": queued["id"], "status": "queued", "model_name": "ctr"}]
    assert Dataset.objects.get(pk=dataset_id).privacy_budget_epsilon is None

    api_a.post(f"/api/v1/jobs/{queued['id']}/cancel")  # never started: it read nothing
    assert set_budget(api_a, dataset_id, 5.0, 1e-5).status_code == 200
    assert set_budget(api_a, dataset_id, None, None).status_code == 200

    started = services.claim_job(job_id=submit_job(api_a, dataset_id).json()["id"], worker="test-host:1")
    services.finish_job(job=started, status=TrainingJob.Status.SUCCEEDED, compute_seconds=1.0, device="cpu")
    refused = set_budget(api_a, dataset_id, 5.0, 1e-5)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "privacy_budget_compromised"
    assert [job["job"] for job in refused.json()["error"]["details"]["jobs"]] == [str(started.pk)]
    assert Dataset.objects.get(pk=dataset_id).privacy_budget_epsilon is None


def test_a_started_private_job_cannot_be_deleted_while_its_dataset_exists(api_a, tenant_a, dataset_id):
    delta = 1e-5
    set_budget(api_a, dataset_id, one_job_epsilon(delta) * 1.01, delta)
    never = private_job(api_a, dataset_id).json()
    api_a.post(f"/api/v1/jobs/{never['id']}/cancel")  # never started: gave its share back, may go
    services.delete_job(tenant=tenant_a.tenant, job_id=never["id"])
    assert not TrainingJob.objects.filter(pk=never["id"]).exists()

    job = services.claim_job(job_id=private_job(api_a, dataset_id).json()["id"], worker="test-host:1")
    services.finish_job(job=job, status=TrainingJob.Status.SUCCEEDED, compute_seconds=0.0, device="cpu")
    with pytest.raises(ConflictError) as refused:
        services.delete_job(tenant=tenant_a.tenant, job_id=job.pk)
    assert refused.value.status_code == 409 and refused.value.code == "private_job_in_budget"
    assert TrainingJob.objects.filter(pk=job.pk).exists()
    shown = api_a.get(f"/api/v1/datasets/{dataset_id}/privacy").json()
    assert shown["spent_epsilon"] == pytest.approx(one_job_epsilon(delta))  # still spent
    assert private_job(api_a, dataset_id).json()["error"]["code"] == "privacy_budget_exceeded"


def test_a_retry_is_held_to_the_budget_like_a_submission(api_a, dataset_id):
    delta = 1e-5
    set_budget(api_a, dataset_id, one_job_epsilon(delta) * 1.01, delta)  # room for one job
    first = private_job(api_a, dataset_id).json()
    api_a.post(f"/api/v1/jobs/{first['id']}/cancel")  # never started: its share is back
    second = private_job(api_a, dataset_id).json()
    assert second["status"] == "queued"

    retried = services.retry_jobs(job_ids=[first["id"]])
    assert retried.requeued == 0 and list(retried.refused) == [first["id"]]
    assert retried.refused[first["id"]].startswith("privacy_budget_exceeded: This job would spend epsilon")
    assert TrainingJob.objects.get(pk=first["id"]).status == "cancelled"
    assert api_a.get(f"/api/v1/datasets/{dataset_id}/privacy").json()["spent_epsilon"] == pytest.approx(
        one_job_epsilon(delta)
    )

    # Once the other gave its share back, the retry fits; two at once: only one of them.
    api_a.post(f"/api/v1/jobs/{second['id']}/cancel")
    retried = services.retry_jobs(job_ids=[first["id"], second["id"]])
    assert retried.requeued == 1 and list(retried.refused) == [second["id"]]
    assert TrainingJob.objects.get(pk=first["id"]).status == "queued"

    # A started private job is counted already: retrying it is not a new spend.
    job = services.claim_job(job_id=first["id"], worker="test-host:1")
    services.finish_job(job=job, status=TrainingJob.Status.FAILED, compute_seconds=1.0, device="cpu")
    assert services.retry_jobs(job_ids=[first["id"]]) == services.Retried(requeued=1, refused={})


def test_a_plain_retry_on_a_dataset_that_now_has_a_budget_is_refused(api_a, dataset_id):
    plain = submit_job(api_a, dataset_id).json()
    api_a.post(f"/api/v1/jobs/{plain['id']}/cancel")
    assert set_budget(api_a, dataset_id, 5.0, 1e-5).status_code == 200
    retried = services.retry_jobs(job_ids=[plain["id"]])
    assert retried.requeued == 0 and retried.refused[plain["id"]].startswith("privacy_required:")
    assert TrainingJob.objects.get(pk=plain["id"]).status == "cancelled"


def test_reading_a_budget_again_costs_no_accounting(api_a, dataset_id):
    set_budget(api_a, dataset_id, 50.0, 1e-5)
    private_job(api_a, dataset_id)
    privacy._spent_and_after.cache_clear()
    first = api_a.get(f"/api/v1/datasets/{dataset_id}/privacy").json()
    second = api_a.get(f"/api/v1/datasets/{dataset_id}/privacy").json()
    assert first == second and first["spent_epsilon"] == pytest.approx(one_job_epsilon(1e-5), rel=1e-9)
    assert privacy._spent_and_after.cache_info().hits == 1 and privacy._spent_and_after.cache_info().misses == 1
    private_job(api_a, dataset_id)  # a new counted job changes the key
    third = api_a.get(f"/api/v1/datasets/{dataset_id}/privacy").json()
    assert third["spent_epsilon"] > first["spent_epsilon"] and len(third["jobs"]) == 2


@pytest.mark.django_db(transaction=True)
def test_a_budget_set_during_a_plain_submission_waits_for_it_and_sees_it(tenant_a, monkeypatch):
    """Without a budget a submission shares the dataset's row (FOR KEY SHARE): setting a budget then waits for
    the job's commit, sees the plain job and refuses, so no plain job slips under a budget."""
    api = client_for(tenant_a.raw_key)
    dataset_id = ready_dataset(api, sample_csv("ctr", ROWS), label="clicked")
    checked, release = threading.Event(), threading.Event()
    real_reserve = services._reserve_runtime

    def reserve(**kwargs):  # runs after the budget check, inside the job's transaction
        checked.set()
        release.wait(30)
        return real_reserve(**kwargs)

    monkeypatch.setattr(services, "_reserve_runtime", reserve)
    results: dict[str, object] = {}

    def run(name: str, call) -> threading.Thread:
        def target() -> None:
            try:
                results[name] = call(client_for(tenant_a.raw_key))
            finally:
                connection.close()

        thread = threading.Thread(target=target)
        thread.start()
        return thread

    submitting = run("job", lambda client: submit_job(client, dataset_id))
    assert checked.wait(30)
    setting = run("budget", lambda client: set_budget(client, dataset_id, 5.0, 1e-5))
    setting.join(timeout=2)
    assert setting.is_alive()  # waiting for the submission's transaction
    release.set()
    submitting.join(timeout=60)
    setting.join(timeout=60)
    assert results["job"].status_code == 201
    assert results["budget"].status_code == 409
    assert results["budget"].json()["error"]["code"] == "privacy_budget_compromised"
    assert Dataset.objects.get(pk=dataset_id).privacy_budget_epsilon is None
