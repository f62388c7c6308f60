"""`import platform` is the standard library in every entry point.

The design card keeps a top-level ``platform/`` folder; as a package it would
shadow the standard library module that Django, Celery, redis-py and
TensorFlow use. These tests prove the folder stays a plain folder.
"""

import platform
import subprocess
import sys
import sysconfig
import urllib.request
from pathlib import Path

import pytest

from core.s3server import port_is_open
from tests.support.workers import ROOT, celery_worker, subprocess_env

STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()


def is_stdlib(path: str) -> bool:
    return Path(path).resolve().parent == STDLIB


def test_platform_folder_is_not_a_package():
    assert (ROOT / "platform").is_dir()
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_in_pytest_after_django_setup():
    import django.conf

    assert django.conf.settings.configured
    assert platform.system()
    assert is_stdlib(platform.__file__)


def test_manage_py_gets_the_stdlib_module():
    code = "import platform, uuid; print(platform.system()); print(platform.__file__)"
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-v", "0", "-c", code],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[0] == platform.system()
    assert is_stdlib(out[1])


def test_python_started_in_the_repo_root_gets_the_stdlib_module():
    out = subprocess.run(
        [sys.executable, "-c", "import platform; print(platform.__file__); platform.system()"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert is_stdlib(out)


def test_gunicorn_serves_the_app(tmp_path):
    port = 18765
    assert not port_is_open("127.0.0.1", port)
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("gunicorn")), "-c", "platform/gunicorn.conf.py", "config.wsgi"],
        cwd=ROOT,
        env=subprocess_env(GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import time

        deadline = time.monotonic() + 30
        while not port_is_open("127.0.0.1", port):
            assert process.poll() is None, "gunicorn exited"
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_inside_a_celery_worker_child_process():
    with celery_worker("default") as (_, report):
        assert report["platform_system"] == platform.system()
        assert is_stdlib(report["platform_module"])
        # Task modules must not pull TensorFlow into a process that forks.
        assert report["tensorflow_loaded"] is False
