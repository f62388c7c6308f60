"""The platform's one Celery app (``celery -A config worker``).

Configuration comes from Django settings under the ``CELERY_`` namespace.
Task modules must not import TensorFlow at import time: the prefork parent
then stays free of it, so children never fork a process holding TensorFlow
state, and only the trainer imports it inside the task.

Logging and metrics hooks (``core.worker_observability``): Celery uses the
settings' LOGGING (so ``LOG_FORMAT=json`` holds in workers and beat), each
task's job or dataset id is in its log lines, and with ``WORKER_METRICS_PORT``
a worker serves its task metrics on that port.
"""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

app = Celery("mlplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _connect_observability() -> None:
    from core import worker_observability as hooks

    signals.setup_logging.connect(hooks.configure_logging, weak=False)
    signals.worker_init.connect(hooks.prepare_metrics, weak=False)
    signals.worker_ready.connect(hooks.serve_metrics, weak=False)
    signals.task_prerun.connect(hooks.task_started, weak=False)
    signals.task_postrun.connect(hooks.task_finished, weak=False)
    signals.task_failure.connect(hooks.task_failed, weak=False)
    signals.task_retry.connect(hooks.task_retried, weak=False)


_connect_observability()
