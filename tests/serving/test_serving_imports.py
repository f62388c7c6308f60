"""TensorFlow stays out of every process but the training worker and the serving runtime's loader."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.compose import image_site_folder
from tests.support.workers import ROOT, subprocess_env


def test_importing_the_serving_app_does_not_import_tensorflow():
    code = (
        "import django, os, sys; os.environ['DJANGO_SETTINGS_MODULE'] = 'config.settings.test'; django.setup(); "
        "import serving.runtime.app, serving.runtime.cache, serving.runtime.batcher, serving.runtime.loader; "
        "import config.urls; print('tensorflow' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"


# Only the trainer imports Keras at module level; it runs in worker-gpu (the ml image), never in the api image.
ML_ONLY_MODULES = ("training.trainer.",)
API_IMAGE_PROCESSES = """
import importlib, json, pkgutil, sys
import django

django.setup()
from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

get_wsgi_application()  # web: gunicorn config.wsgi
get_resolver().url_patterns  # every view module
from config.celery import app

app.loader.import_default_modules()  # worker-cpu and beat: every task module
failed = {}
from pathlib import Path

from django.apps import apps

root = Path.cwd().resolve()
project = [c.name for c in apps.get_app_configs() if Path(c.path).resolve().parent == root]  # our apps, all of them
for package in ["config", *project]:
    for module in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        if not module.name.startswith(%(ml_only)r):
            try:
                importlib.import_module(module.name)
            except Exception as exc:
                failed[module.name] = repr(exc)
loaded = sorted(m for m in ("tensorflow", "keras", "onnx", "onnxruntime", "tf2onnx", "h5py") if m in sys.modules)
print(json.dumps({"failed": failed, "loaded": loaded, "packages": project}))
"""


def test_web_worker_cpu_and_beat_need_nothing_the_api_image_lacks(tmp_path):
    """With only requirements/api.txt importable (as in the api image), everything but the trainer imports.

    A module that imported TensorFlow, Keras, ONNX or anything else the api image does not install would fail
    here with ``ModuleNotFoundError`` (tests/deploy/test_compose_stack.py runs the real processes the same way).
    """
    site = image_site_folder("api", tmp_path / "api-image")
    env = subprocess_env(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        PYTHONPATH=str(site),
        SERVING_METRICS_TOKEN="t" * 32,
        METRICS_TOKEN="m" * 32,
    )
    env.pop("DEBUG", None)
    code = API_IMAGE_PROCESSES % {"ml_only": ML_ONLY_MODULES}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"core", "tenants", "serving", "dashboard"} <= set(answer.pop("packages"))
    assert answer == {"failed": {}, "loaded": []}
