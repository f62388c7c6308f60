"""Faults in the broker: Redis, then RabbitMQ, stopped for 20 s while jobs are queued and running, then started.

The test runs its own broker (a persistent ``redis-server``, or a RabbitMQ
node of its own name, port and data folder) on a free port, points a worker
and this process at it, and stops and starts only that server, by process
id. A small stand-in for Celery beat
sends the periodic dispatch and requeue tasks, as production's beat does.

What must hold: a job submitted while the broker is down is accepted (201)
and runs later; every job ends ``succeeded`` exactly once (one version each,
each epoch recorded once); nothing of another tenant changes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time

import pytest

from core.s3server import port_is_open
from serving.models import ModelVersion
from tests.support.isolation import tenant_rows
from tests.support.jobs import ctr_dataset, job_state, submit, wait_for
from tests.support.workers import ROOT, celery_worker, free_port, stop_process_group
from training.models import JobMetric, TrainingJob

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]  # its own broker, not the configured one
PARAMS = {"epochs": 4, "batch_size": 8, "max_len": 30, "embedding_dim": 16, "conv_filters": 16, "lstm_units": 16}
OUTAGE_SECONDS = 20


class OwnBroker:
    """A broker server of this test's own, started and stopped by process id (never the machine's)."""

    name = ""
    executable = ""
    url_template = ""  # formatted with this server's port

    def __init__(self) -> None:
        if not shutil.which(self.executable):
            pytest.fail(f"{self.executable} is not installed", pytrace=False)
        self.port = free_port()
        self.url = self.url_template.format(port=self.port)
        self.folder = ROOT / "var" / "test" / f"{self.name}-{self.port}"
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.process: subprocess.Popen | None = None

    def arguments_and_environment(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def start(self) -> None:
        arguments, environment = self.arguments_and_environment()
        with open(self.folder / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [self.executable, *arguments],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=os.environ | environment,
                start_new_session=True,
            )
        wait_for(self._answers, 90, f"{self.name} did not start")

    def _answers(self) -> bool:
        return port_is_open("127.0.0.1", self.port)

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)
            self.process = None
            wait_for(lambda: not self._answers(), 30, f"{self.name} did not stop")


class OwnRedis(OwnBroker):
    name = executable = "redis-server"
    url_template = "redis://127.0.0.1:{port}/0"

    def arguments_and_environment(self):
        arguments = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        arguments += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.folder)]
        return arguments, {}


class OwnRabbitMQ(OwnBroker):
    name = "rabbitmq"
    executable = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # the node itself, not /usr/sbin's wrapper that su's
    url_template = "amqp://guest:guest@127.0.0.1:{port}//"

    def arguments_and_environment(self):
        (self.folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        (self.folder / "enabled_plugins").write_text("[].\n")
        (self.folder / "rabbitmq-env.conf").write_text("")  # not the machine's /etc/rabbitmq one
        environment = {
            "HOME": str(self.folder),  # its own Erlang cookie
            "RABBITMQ_NODENAME": f"chaos{self.port}@localhost",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.folder / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
        }
        return [], environment


@contextlib.contextmanager
def broker(url: str):
    """This process's Celery app sends to ``url`` (and the workers it starts use it too)."""
    from config.celery import app

    saved = app.conf.broker_url, app.conf.broker_transport_options, os.environ.get("CELERY_BROKER_URL")
    app.conf.broker_url, app.conf.broker_transport_options = url, {}
    os.environ["CELERY_BROKER_URL"] = url
    app._pool, app.amqp._producer_pool = None, None
    try:
        yield
    finally:
        app.conf.broker_url, app.conf.broker_transport_options = saved[0], saved[1]
        if saved[2] is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = saved[2]
        app._pool, app.amqp._producer_pool = None, None


def mini_beat(stop: threading.Event) -> None:
    """What Celery beat sends every 30 and 60 s in production, every 3 s here; a broker outage is skipped."""
    from training.tasks import dispatch_jobs, requeue_stale_jobs

    while not stop.wait(3):
        with contextlib.suppress(Exception):
            dispatch_jobs.delay()
            requeue_stale_jobs.delay()


@pytest.mark.parametrize("kind", [OwnRedis, OwnRabbitMQ], ids=["redis", "rabbitmq"])
def test_broker_down_for_20_seconds_while_jobs_are_queued_and_running(kind, api_a, tenant_a, tenant_b):
    from tests.support.dashboard import bystander

    b_before = bystander(tenant_b.tenant)
    server = kind()
    server.start()
    stop = threading.Event()
    try:
        with broker(server.url), celery_worker("gpu,cpu,default"):
            beat = threading.Thread(target=mini_beat, args=(stop,))
            beat.start()
            dataset_id = ctr_dataset(api_a, 400)
            jobs = [submit(api_a, dataset_id, params=PARAMS, seed=n, model_name=f"m{n}").json()["id"] for n in range(3)]
            wait_for(lambda: job_state(jobs[0]).progress.get("epoch"), 240, "nothing started")
            server.stop()
            started = time.monotonic()
            during = submit(api_a, dataset_id, params=PARAMS, seed=9, model_name="m9")
            assert during.status_code == 201 and time.monotonic() - started < 15  # accepted, not stuck
            jobs.append(during.json()["id"])
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - started)))
            server.start()
            done = wait_for(
                lambda: all(job_state(j).status in TrainingJob.TERMINAL for j in jobs) and jobs, 420, "jobs stuck"
            )
    finally:
        stop.set()
        server.stop()
    finals = [job_state(j) for j in done]
    assert [j.status for j in finals] == ["succeeded"] * 4, [(j.status, j.error_message) for j in finals]
    for job in finals:
        assert list(JobMetric.objects.filter(job=job).values_list("epoch", flat=True)) == [1, 2, 3, 4]
        versions = ModelVersion.objects.for_tenant(tenant_a.tenant).filter(model__name=job.model_name)
        assert [v.version for v in versions] == [1] and job.model_version == 1
    assert tenant_rows(tenant_b.tenant) == b_before
