"""Settings: every CELERY_* name is one Celery knows, and bad environments fail at start."""

import subprocess
import sys

import pytest
from celery.app.defaults import DEFAULTS as CELERY_DEFAULTS
from django.conf import settings

from config.celery import app
from tests.support.workers import ROOT


def celery_setting_names() -> list[str]:
    return [name for name in dir(settings) if name.startswith("CELERY_")]


def test_there_are_celery_settings():
    assert len(celery_setting_names()) > 10


@pytest.mark.parametrize("name", celery_setting_names())
def test_every_celery_setting_is_known_to_celery(name):
    key = name.removeprefix("CELERY_").lower()
    assert key in CELERY_DEFAULTS, f"{name} is not a Celery setting (typo?)"


def test_reliability_settings_reach_the_app():
    conf = app.conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.accept_content == ["json"]
    assert conf.task_serializer == "json"
    assert {q.name for q in conf.task_queues} == {"default", "cpu", "gpu", "webhooks"}
    assert conf.task_create_missing_queues is False


@pytest.mark.parametrize(
    "task, queue",
    [
        ("training.tasks.train_model", "gpu"),
        ("datasets.tasks.validate_dataset", "cpu"),
        ("usage.tasks.aggregate_usage", "cpu"),
        ("core.tasks.probe_runtime", "default"),
        ("events.tasks.deliver", "webhooks"),
        ("events.tasks.send_due_deliveries", "default"),
    ],
)
def test_routing(task, queue):
    route = app.amqp.router.route({}, task)
    assert route["queue"].name == queue


def test_redis_visibility_timeout_outlives_the_longest_training_run(monkeypatch):
    out = run_settings_probe(
        {"CELERY_BROKER_URL": "redis://127.0.0.1:6379/15"},
        "print(s.CELERY_BROKER_TRANSPORT_OPTIONS['visibility_timeout'], s.TRAINING_TIME_LIMIT_SECONDS)",
    )
    visibility, limit = map(int, out.stdout.split())
    assert visibility > limit


def run_settings_probe(env: dict[str, str], code: str = "pass", module: str = "config.settings.base"):
    full_env = {"PATH": "/usr/bin:/bin", "DEBUG": "0", "SECRET_KEY": "x" * 50} | env
    return subprocess.run(
        [sys.executable, "-c", f"import importlib; s = importlib.import_module({module!r}); {code}"],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"SECRET_KEY": ""}, "SECRET_KEY"),
        ({"DATABASE_URL": "mysql2://nope"}, "DATABASE_URL"),
        ({"CELERY_BROKER_URL": "kafka://x"}, "CELERY_BROKER_URL"),
        ({"S3_ENDPOINT_URL": "ftp://x"}, "S3_ENDPOINT_URL"),
        ({"DEBUG": "maybe"}, "DEBUG"),
        ({"TRAINING_TIME_LIMIT_SECONDS": "soon"}, "TRAINING_TIME_LIMIT_SECONDS"),
    ],
)
def test_misconfiguration_fails_at_start_naming_the_variable(env, variable):
    result = run_settings_probe(env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert variable in result.stderr.strip().splitlines()[-1]


def test_production_settings_refuse_debug():
    result = run_settings_probe({"DEBUG": "1"}, module="config.settings.production")
    assert result.returncode != 0
    assert "DEBUG" in result.stderr


def test_production_settings_pass_the_deploy_check():
    env = {
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": "a-long-random-production-secret-key-0123456789-abcdefghijklmnop",
        "ALLOWED_HOSTS": "ml.example.com",
        "PLATFORM_VAR_DIR": str(ROOT / "var" / "test" / "deploy-check"),
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr + result.stdout
