"""The platform's one Celery app (``celery -A config worker``).

Configuration comes from Django settings under the ``CELERY_`` namespace.
Task modules must not import TensorFlow at import time: the prefork parent
then stays free of it, so children never fork a process holding TensorFlow
state, and only the trainer imports it inside the task.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

app = Celery("mlplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
