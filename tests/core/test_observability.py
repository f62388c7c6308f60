"""Observability: JSON log lines with request, tenant and job ids and no secrets; the API's /metrics (token, route
patterns, every gunicorn worker added up, queue lengths, jobs by state); a worker's task metrics on its own port."""

from __future__ import annotations

import contextlib
import contextvars
import io
import json
import logging
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from config.celery import app as celery_app
from core import logs
from core import queue as task_queue
from core.metrics import MetricsMiddleware
from core.middleware import RequestIdLogFilter
from tests.support.factories import make_job
from tests.support.jobs import TINY_CTR, ctr_dataset, job_state, submit, wait_for
from tests.support.serving import parse_metrics
from tests.support.workers import ROOT, celery_worker, free_port, gunicorn_server, subprocess_env
from training.models import TrainingJob

TOKEN = "test-metrics-token-0123456789"


def _get(url: str, *, token: str | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(url, headers=headers or {})
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


PLAIN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ")


def _json_lines(text: str, *, native_output: bool = False) -> list[dict]:
    """Every non-empty line must be one JSON object (gunicorn's, Celery's and the application's alike).

    ``native_output``: a worker's file also holds what never goes through Python's logging (TensorFlow's C++
    runtime, Celery's start banner): such lines are allowed, but no plain-format log line is.
    """
    parsed = []
    for line in text.splitlines():
        if native_output and not line.startswith("{"):
            assert not PLAIN_LINE.match(line), f"a plain log line with LOG_FORMAT=json: {line[:300]!r}"
            continue
        if line.strip():
            try:
                parsed.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"not a JSON log line: {line[:300]!r}") from None
    return parsed


# --- the formatter ----------------------------------------------------------------------------------------------


def test_a_json_line_carries_the_context_extra_fields_and_the_exception_but_no_credential():
    contextvars.Context().run(_log_and_check_json_lines)  # a fresh context: no ids from earlier tests


def _log_and_check_json_lines() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(RequestIdLogFilter())
    logger = logging.getLogger("tests.observability.formatter")
    logger.addHandler(handler)
    logger.propagate = False
    key = "mlp_AbCdEfGhIj_" + "s" * 40
    try:
        with logs.context(tenant_id="t-1", job_id="j-1"):
            try:
                raise ValueError(f"bad header Bearer {key}")
            except ValueError:
                logger.exception(
                    "refused Authorization: Bearer %s",
                    key,
                    extra={"route": "/x", "note": f"made {key}", "obj": object()},
                )
        logger.info("outside")
    finally:
        logger.removeHandler(handler)
    first, second = _json_lines(stream.getvalue())
    assert first["level"] == "ERROR" and first["logger"] == "tests.observability.formatter"
    assert first["tenant_id"] == "t-1" and first["job_id"] == "j-1"
    assert first["route"] == "/x" and "obj" not in first  # plain extra values only
    assert "ValueError" in first["exception"] and first["time"].endswith("+00:00")
    assert "s" * 40 not in stream.getvalue()
    assert first["message"] == "refused Authorization: Bearer [redacted]"
    assert first["note"] == "made mlp_AbCdEfGhIj_[redacted]"  # a key's prefix says which; its secret is gone
    assert "tenant_id" not in second and "job_id" not in second  # the context ended with the block


def test_production_refuses_an_open_metrics_endpoint():
    with (
        override_settings(METRICS_TOKEN_REQUIRED=True, METRICS_TOKEN=""),
        pytest.raises(ImproperlyConfigured, match="METRICS_TOKEN must be set"),
    ):
        MetricsMiddleware(lambda request: None)
    with override_settings(METRICS_TOKEN_REQUIRED=True, METRICS_TOKEN=TOKEN):
        MetricsMiddleware(lambda request: None)


def test_production_refuses_a_worker_metrics_port_without_a_token():
    env = subprocess_env(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        SECRET_KEY="a-long-random-production-secret-key-0123456789-abcdefghijklmnop",
        WORKER_METRICS_PORT=str(free_port()),
        METRICS_TOKEN="",
    )
    env.pop("DEBUG", None)
    result = subprocess.run(
        [str(Path(sys.executable).with_name("celery")), "-A", "config", "worker", "-P", "solo", "-Q", "default"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "METRICS_TOKEN must be set" in result.stdout + result.stderr


# --- the API in-process: token, route patterns, jobs by state, queue lengths ------------------------------------


@pytest.mark.django_db(transaction=True)  # the jobs' task messages are sent on commit
@override_settings(METRICS_TOKEN=TOKEN)
def test_metrics_need_the_token_and_count_requests_by_route_pattern(client, api_a, tenant_a):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    before = parse_metrics(client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode())
    missing = [str(uuid.uuid4()) for _ in range(3)]
    for job_id in missing:
        assert api_a.get(f"/api/v1/jobs/{job_id}").status_code == 404
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    after = parse_metrics(text)
    name = 'api_requests_total{method="GET",route="/api/v1/jobs/<pk>",status="4xx"}'
    assert name in after, text
    assert after[name] - before.get(name, 0.0) == 3
    assert not any(job_id in text for job_id in missing), "raw paths must never become labels"


@pytest.mark.django_db
@override_settings(METRICS_TOKEN=TOKEN, SERVING_METRICS_TOKEN="")
def test_the_metrics_token_also_shows_operators_readyz_reasons(client):
    assert "reasons" in client.get("/readyz", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").json()
    assert "reasons" not in client.get("/readyz", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x").json()


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
@override_settings(METRICS_TOKEN=TOKEN)
def test_metrics_report_queue_lengths_and_jobs_by_state(client, tenant_a):
    jobs = [make_job(tenant_a.tenant) for _ in range(2)]
    TrainingJob.objects.filter(pk=jobs[1].pk).update(status=TrainingJob.Status.FAILED)
    _purge("gpu")
    try:
        messages = 5
        for _ in range(messages):  # no worker runs here: they wait in the queue
            task_queue.send("training.tasks.train_model", job_id=str(uuid.uuid4()))
        values = parse_metrics(client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode())
    finally:
        _purge("gpu")
    assert values['celery_queue_length{queue="gpu"}'] == messages
    assert values['mlplatform_scrape_error{source="broker"}'] == 0
    assert values['training_jobs{status="queued"}'] == 1
    assert values['training_jobs{status="failed"}'] == 1
    assert values['training_jobs{status="running"}'] == 0
    assert values["training_oldest_queued_job_age_seconds"] >= 0
    assert values['mlplatform_scrape_error{source="jobs"}'] == 0


def _purge(queue: str) -> None:
    with celery_app.connection_for_write() as connection:
        channel = connection.channel()
        try:
            channel.queue_purge(queue)
        except connection.channel_errors:
            pass  # not declared yet: nothing to purge
        finally:
            with contextlib.suppress(Exception):  # AMQP has closed a channel whose purge found no queue
                channel.close()


@pytest.mark.django_db
def test_a_broker_that_never_answers_costs_the_scrape_a_bounded_wait(client):
    # A real socket that accepts connections (the kernel's backlog) and never says a word: a hung broker.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        with override_settings(METRICS_TOKEN=TOKEN, CELERY_BROKER_URL=url, METRICS_SCRAPE_TIMEOUT_SECONDS=1):
            started = time.monotonic()
            response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
            took = time.monotonic() - started
    values = parse_metrics(response.content.decode())
    assert response.status_code == 200
    assert took < 4, took
    assert values['mlplatform_scrape_error{source="broker"}'] == 1
    assert values['mlplatform_scrape_error{source="jobs"}'] == 0  # the other sources are still reported


# --- the API under gunicorn: two workers added up, JSON lines with request and tenant ids, no secrets ---------


@contextmanager
def _gunicorn(workers: int, **extra_env: str):
    with gunicorn_server(workers=workers, threads=2, **extra_env) as (base, log_path):
        yield base, log_path


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # gunicorn's workers read the tenants and keys from their own connections
def test_two_gunicorn_workers_report_as_one_in_json_logs_with_request_and_tenant_ids(tenant_a):
    bogus_key = "mlp_AbCdEfGhIj_" + "z" * 40
    with _gunicorn(2, LOG_FORMAT="json", METRICS_TOKEN=TOKEN) as (base, log_path):
        assert _get(base + "/metrics")[0] == 401
        assert _get(base + "/metrics", token="wrong")[0] == 401
        errors: list[str] = []
        request_ids: list[str] = []

        def fetch(ids: list[str]) -> None:
            for request_id in ids:
                status, body, headers = _get(
                    f"{base}/api/v1/jobs/{uuid.uuid4()}", token=tenant_a.raw_key, headers={"X-Request-ID": request_id}
                )
                if status != 404 or headers.get("X-Request-ID") != request_id:
                    errors.append(f"{status} {body[:200]!r}")

        # Batches of 40 from 8 threads until both workers have answered some (the kernel picks who accepts).
        for batch in range(10):
            ids = [f"obs-{batch}-{n}" for n in range(40)]
            request_ids += ids
            threads = [threading.Thread(target=fetch, args=(ids[n::8],)) for n in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            time.sleep(0.2)  # the lines reach the file
            if len(_pids_answering(log_path.read_text(), request_ids)) == 2:
                break
        requests = len(request_ids)
        assert not errors, errors
        assert _get(f"{base}/api/v1/jobs", token=bogus_key)[0] == 401
        for _ in range(6):  # whichever worker answers the scrape, it counts every worker's requests
            status, body, _ = _get(base + "/metrics", token=TOKEN)
            assert status == 200
            values = parse_metrics(body.decode())
            assert values['api_requests_total{method="GET",route="/api/v1/jobs/<pk>",status="4xx"}'] == requests
            assert values['api_request_seconds_count{method="GET",route="/api/v1/jobs/<pk>"}'] == requests
        time.sleep(0.5)  # the last lines reach the file
    text = log_path.read_text()
    lines = _json_lines(text)
    access = [line for line in lines if line["logger"] == "api.access" and line.get("request_id") in request_ids]
    assert len(access) == requests
    assert {line["tenant_id"] for line in access} == {str(tenant_a.tenant.id)}
    assert {line["route"] for line in access} == {"/api/v1/jobs/<pk>"}
    assert all(line["status"] == 404 and line["duration_ms"] >= 0 for line in access)
    assert len({line["pid"] for line in access}) == 2, "both workers should have answered some of the requests"
    assert any(line["logger"].startswith("gunicorn") for line in lines)  # gunicorn's own lines are JSON too
    assert tenant_a.raw_key not in text and "z" * 40 not in text and "Bearer" not in text


def _pids_answering(text: str, request_ids: list[str]) -> set[int]:
    wanted = set(request_ids)
    return {
        line["pid"] for line in _json_lines(text) if line["logger"] == "api.access" and line.get("request_id") in wanted
    }


# --- a real worker running a job: its lines carry the job's ids; its task metrics on its own port --------------


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_logs_json_with_the_job_id_and_serves_its_task_metrics(api_a, tenant_a):
    port = free_port()
    with celery_worker(
        "gpu,cpu,default",
        LOG_FORMAT="json",
        METRICS_TOKEN=TOKEN,
        WORKER_METRICS_PORT=str(port),
        WORKER_METRICS_HOST="127.0.0.1",
    ):
        log_path: Path = celery_worker.last_log
        dataset_id = ctr_dataset(api_a, 200)
        job = submit(api_a, dataset_id, params=TINY_CTR).json()
        done = wait_for(
            lambda: (j := job_state(job["id"])).status in TrainingJob.TERMINAL and j, 240, "job did not finish"
        )
        assert done.status == "succeeded", done.error_message
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        assert _get(metrics_url)[0] == 401
        values = wait_for(
            lambda: (
                (v := parse_metrics(_get(metrics_url, token=TOKEN)[1].decode())).get(
                    'celery_task_seconds_count{state="success",task="training.tasks.train_model"}'
                )
                and v
            ),
            30,
            "the training task's duration was not reported",
        )
        assert values['celery_task_seconds_count{state="success",task="datasets.tasks.validate_dataset"}'] >= 1
        assert values.get('celery_task_failures_total{task="training.tasks.train_model"}', 0.0) == 0
        time.sleep(0.5)
    lines = _json_lines(log_path.read_text(), native_output=True)
    in_job = [line for line in lines if line.get("job_id") == job["id"]]
    assert in_job, "no line of the worker named the job"
    assert any(line.get("tenant_id") == str(tenant_a.tenant.id) for line in in_job)
    in_validation = [line for line in lines if line.get("dataset_id") == dataset_id]
    assert in_validation and any(line.get("tenant_id") == str(tenant_a.tenant.id) for line in in_validation)
    assert tenant_a.raw_key not in log_path.read_text()
