"""End to end on real processes: train -> publish -> promote -> predict -> train again -> move the alias.

A Celery worker trains both versions; ``manage.py serve_models`` answers
predictions the whole time from a client that never stops sending. The
alias move must switch answers to the new version with no failed request.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.support.jobs import SMALL_CTR, ctr_dataset, job_state, submit, wait_for
from tests.support.serving import call
from tests.support.workers import celery_worker, serving_process
from training.models import TrainingJob

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]
VISITOR = "12 85 3 9 41 7 7 120"


def train(api, dataset_id: str, seed: int) -> int:
    job = submit(api, dataset_id, params=SMALL_CTR | {"epochs": 1}, seed=seed).json()
    done = wait_for(lambda: (j := job_state(job["id"])).status in TrainingJob.TERMINAL and j, 240, "no finish")
    assert done.status == "succeeded", done.error_message
    return done.model_version


def test_train_promote_predict_retrain_move_alias_without_a_failed_request(api_a, tenant_a):
    tenant_a.tenant.plan.predictions_per_minute = 10**6  # the client below sends as fast as it can
    tenant_a.tenant.plan.save()
    answers: list[tuple[int, str | None, float | None]] = []
    stop = threading.Event()

    def client(base: str) -> None:
        while not stop.is_set():
            try:
                status, body, headers = call(
                    base, "POST", "/v1/models/ctr:predict", {"instances": [VISITOR]}, tenant_a.raw_key
                )
            except Exception as exc:  # a transport failure is a failed request too
                answers.append((0, repr(exc), None))
                continue
            ok = status == 200
            answers.append(
                (
                    status,
                    headers["X-Model-Version"] if ok else str(body),
                    body["predictions"][0]["probability"] if ok else None,
                )
            )

    with celery_worker("gpu,cpu,default"), serving_process(SERVING_ROUTE_TTL_SECONDS="1") as base:
        dataset_id = ctr_dataset(api_a, 400)
        assert train(api_a, dataset_id, seed=1) == 1
        assert api_a.put("/api/v1/models/ctr/aliases/production", {"version": 1}, format="json").status_code == 200
        threads = [threading.Thread(target=client, args=(base,)) for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: len(answers) > 5, 60, "no predictions")
            assert train(api_a, dataset_id, seed=2) == 2
            served_before_move = len(answers)
            assert api_a.put("/api/v1/models/ctr/aliases/production", {"version": 2}, format="json").status_code == 200
            wait_for(lambda: answers[-1][1] != "1", 15, "the alias move did not reach the serving process")
            settled = len(answers)
            time.sleep(1.0)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    failed = [a for a in answers if a[0] != 200]
    assert not failed, failed[:5]
    assert {v for _, v, _ in answers[:served_before_move]} == {"1"}  # v2 published but not promoted: not served
    assert {v for _, v, _ in answers[settled + 2 :]} == {"2"}
    before = {p for _, v, p in answers if v == "1"}
    after = {p for _, v, p in answers if v == "2"}
    assert len(before) == 1 and len(after) == 1 and before != after  # each version answers consistently, differently
