"""TensorFlow stays out of every process but the training worker and the serving runtime's loader."""

from __future__ import annotations

import subprocess
import sys

from tests.support.workers import ROOT


def test_importing_the_serving_app_does_not_import_tensorflow():
    code = (
        "import django, os, sys; os.environ['DJANGO_SETTINGS_MODULE'] = 'config.settings.test'; django.setup(); "
        "import serving.runtime.app, serving.runtime.cache, serving.runtime.batcher, serving.runtime.loader; "
        "import config.urls; print('tensorflow' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"
