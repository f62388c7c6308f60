"""docker-compose.yml run as processes: every application service healthy, then the main job through them.

There is no Docker daemon here, so the test does what ``docker compose up`` would with the same inputs: it reads
``docker-compose.yml`` (anchors, merges and ``${VAR...}`` interpolation from the operator's variables of
``compose.env.example``), and runs web, serving, worker-cpu, worker-gpu, worker-webhooks and beat with their own
command and environment, through the image's ENTRYPOINT and with the image's ENV (``platform/Dockerfile``, per
build target), from the repository root as WORKDIR. What only Docker provides is emulated (a host name, a home, a
filesystem of its own, and only the image's packages: what its requirements file does not install cannot be
imported), and everything compose names that differs here is rewritten through one table (``rewrites``): the
compose host names become this machine's PostgreSQL (a database of the test's own), a Redis server and a SeaweedFS
the test starts, and the published ports become free ones. A rewrite that no longer matches, or a compose host name
left after rewriting, fails the test: the compose file and the code cannot drift apart unnoticed.

Then each service's own health check runs (as a process, in the service's environment) until it passes, in
``depends_on`` order, and the main job goes through the stack like an operator and a tenant: ``manage.py
create_tenant`` and ``create_api_key`` in web's environment (``docker compose exec web``), the click data
uploaded to web behind a TLS proxy's headers, validated by worker-cpu, trained by worker-gpu (on the CPU here),
published, promoted and predicted through serving. It prints the seconds to all-healthy and to the first
prediction.
"""

from __future__ import annotations

import contextlib
import csv
import http.cookies
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis

from core.s3server import S3Server, port_is_open, start_s3_server
from datasets.sample_data import ctr_rows
from tests.support.compose import (
    COMPOSE_ENV_EXAMPLE,
    ROOT,
    ComposeError,
    dockerfile_stage,
    duration_seconds,
    healthcheck_argv,
    image_site_folder,
    load_compose,
    read_env_file,
    startup_order,
)
from tests.support.jobs import TINY_CTR
from tests.support.workers import free_port

pytestmark = pytest.mark.slow

APP_SERVICES = ("web", "serving", "worker-cpu", "worker-gpu", "worker-webhooks", "beat")
INFRA_SERVICES = ("postgres", "redis", "s3")  # replaced by this machine's PostgreSQL, a Redis and a SeaweedFS
# The operator's secrets (compose.env.example leaves them empty for the operator to fill in).
SECRETS = {
    "SECRET_KEY": "compose-test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
    "POSTGRES_PASSWORD": "compose-test-postgres-password",
    "S3_SECRET_ACCESS_KEY": "compose-test-s3-secret-key",
    "SERVING_METRICS_TOKEN": "compose-test-metrics-token",
    "METRICS_TOKEN": "compose-test-api-metrics-token",
}
# Documented capacity variables an operator of a small host would set (and proof that they reach the processes).
OPERATOR_CHOICES = {"GUNICORN_WORKERS": "2", "CPU_WORKER_CONCURRENCY": "1"}
POSTGRES_ADMIN = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}
HEALTHY_WITHIN_SECONDS = 150
JOB_WITHIN_SECONDS = 180
LEFTOVER_HOST = re.compile(
    r"(?<![\w.-])(postgres|redis|s3|web|serving|worker-cpu|worker-gpu|worker-webhooks|beat):\d+|0\.0\.0\.0"
)
BEAT_SCHEDULE = "/tmp/celerybeat-schedule"  # noqa: S108 - a path inside beat's container, rewritten below
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what compose binds in a container; loopback here
ML_LIBRARIES = ("tensorflow", "onnxruntime", "_pywrap_tf", "libtf")


@dataclass(frozen=True)
class Local:
    """Where this run put what compose calls postgres, redis, s3 and the published ports."""

    database: str
    redis_port: int
    s3_port: int
    web_port: int
    serving_port: int
    cpu_metrics_port: int
    gpu_metrics_port: int
    webhooks_metrics_port: int
    tmp: Path


def rewrites(local: Local) -> list[tuple[str, str]]:
    """The one table of differences between compose's network and this machine (substrings, in order)."""
    return [
        # compose host names -> loopback
        ("@postgres:5432/platform", f"@127.0.0.1:5432/{local.database}"),  # only the database name changes
        ("redis://redis:6379/", f"redis://127.0.0.1:{local.redis_port}/"),
        ("http://s3:8333", f"http://127.0.0.1:{local.s3_port}"),
        ("http://serving:8001", f"http://127.0.0.1:{local.serving_port}"),  # web's SERVING_URL
        # published ports -> free ports; S3_PUBLIC_ENDPOINT_URL is the s3 service's published port
        ("http://localhost:8333", f"http://localhost:{local.s3_port}"),
        ("0.0.0.0:8000", f"127.0.0.1:{local.web_port}"),  # GUNICORN_BIND
        ("http://127.0.0.1:8000/", f"http://127.0.0.1:{local.web_port}/"),  # web's health check
        ("http://127.0.0.1:8001/", f"http://127.0.0.1:{local.serving_port}/"),  # serving's health check
        ("9808", str(local.cpu_metrics_port)),  # worker-cpu's WORKER_METRICS_PORT
        ("9818", str(local.gpu_metrics_port)),  # worker-gpu's (its first GPU's worker; the CPU fallback's here)
        ("9828", str(local.webhooks_metrics_port)),  # worker-webhooks'
        # volumes and container-local files -> the test's folders
        ("/var/cache/mlplatform-models", str(local.tmp / "volumes" / "modelcache")),
        (BEAT_SCHEDULE, str(local.tmp / "beat" / "celerybeat-schedule")),
    ]


def argv_rewrites(local: Local) -> dict[tuple[str, str], str]:
    """(previous argument, argument) -> argument, for serving's ``--host 0.0.0.0 --port 8001``."""
    return {("--host", ALL_INTERFACES): "127.0.0.1", ("--port", "8001"): str(local.serving_port)}


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    healthcheck: list[str] | None
    healthcheck_timeout: float
    depends_on: dict[str, str]
    process: subprocess.Popen | None = None
    log: Path | None = None
    healthy_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def operator_variables() -> dict[str, str]:
    """``cp compose.env.example .env`` with the secrets filled in and two capacity choices uncommented."""
    variables = read_env_file(COMPOSE_ENV_EXAMPLE)
    assert set(SECRETS) <= set(variables), f"compose.env.example must list the secrets {sorted(SECRETS)}"
    return variables | SECRETS | OPERATOR_CHOICES


def build_services(compose: dict[str, Any], local: Local) -> dict[str, Service]:
    """Each application service as a process: the image's ENTRYPOINT and ENV, the service's command and env."""
    table = rewrites(local)
    used = dict.fromkeys(old for old, _ in table)
    by_argument = argv_rewrites(local)
    used_arguments = dict.fromkeys(by_argument, 0)

    def rewrite(text: str) -> str:
        for old, new in table:
            if old in text:
                used[old] = 1
                text = text.replace(old, new)
        return text

    def rewrite_argv(argv: list[str]) -> list[str]:
        out = []
        for index, argument in enumerate(argv):
            key = (argv[index - 1] if index else "", argument)
            if key in by_argument:
                used_arguments[key] = 1
                argument = by_argument[key]
            out.append(rewrite(argument))
        return out

    services: dict[str, Service] = {}
    for name in APP_SERVICES:
        spec = compose["services"][name]
        target = spec["build"]["target"]
        stage = dockerfile_stage(target)
        assert stage.workdir == "/app", f"{name}: the test maps WORKDIR /app to the repository root"
        entrypoint = [
            str(ROOT / arg.removeprefix("/app/")) if arg.startswith("/app/") else arg for arg in stage.entrypoint
        ]
        command = spec.get("command", stage.cmd)
        command = command.split() if isinstance(command, str) else list(command)
        container = local.tmp / "containers" / name
        for folder in ("var", "home"):
            (container / folder).mkdir(parents=True, exist_ok=True)
        env = {
            # What Docker gives every container: the image's ENV, its PATH (here the venv's), a host name, a home,
            # and its own filesystem (the image's /app/var, where PLATFORM_VAR_DIR defaults to, is per container).
            **stage.env,
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "HOSTNAME": socket.gethostname(),  # Celery's %h and the worker health checks' $HOSTNAME agree
            "HOME": str(container / "home"),
            "PLATFORM_VAR_DIR": str(container / "var"),
            # ... and only its own packages: what the target's requirements file does not install cannot be imported.
            "PYTHONPATH": str(image_site_folder(target, local.tmp / "images" / target)),
            **{key: rewrite(str(value)) for key, value in (spec.get("environment") or {}).items()},
        }
        for volume in spec.get("volumes") or []:
            _source, _, target_path = volume.partition(":")
            assert any(old == target_path for old, _ in table), f"{name}: volume {volume} has no local folder"
            Path(rewrite(target_path)).mkdir(parents=True, exist_ok=True)
        healthcheck = spec.get("healthcheck") or {}
        argv = healthcheck_argv(healthcheck.get("test"))
        services[name] = Service(
            name=name,
            argv=rewrite_argv([*entrypoint, *command]),
            env=env,
            healthcheck=rewrite_argv(argv) if argv else None,
            healthcheck_timeout=duration_seconds(healthcheck.get("timeout"), 30),
            depends_on={
                dep: (cond or {}).get("condition", "service_started") for dep, cond in spec["depends_on"].items()
            },
        )
        services[name].extra["target"] = target
    Path(rewrite(BEAT_SCHEDULE)).parent.mkdir(parents=True, exist_ok=True)
    stale = [old for old, hit in used.items() if not hit] + [str(key) for key, hit in used_arguments.items() if not hit]
    assert not stale, f"rewrites that match nothing in docker-compose.yml any more (update REWRITES): {stale}"
    for service in services.values():
        texts = [*service.argv, *(service.healthcheck or []), *service.env.values()]
        leftovers = sorted({m[0] for text in texts for m in LEFTOVER_HOST.finditer(text)})
        assert not leftovers, f"{service.name}: compose addresses with no local counterpart: {leftovers}"
    return services


# --- the infrastructure compose's postgres, redis and s3 stand for ----------------------------------------------


def free_port_block(size: int = 15) -> int:
    """A run of ``size`` free ports below Linux's ephemeral range (``weed mini`` takes 15 from the S3 port)."""
    rng = random.Random()  # noqa: S311 - picking ports, not secrets
    for _ in range(200):
        base = rng.randrange(21000, 32000 - size)
        if all(not port_is_open("127.0.0.1", port) and _bindable(port) for port in range(base, base + size)):
            return base
    raise RuntimeError("no block of free ports for SeaweedFS")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def postgres_admin():
    try:
        connection = psycopg2.connect(connect_timeout=3, **POSTGRES_ADMIN)
    except psycopg2.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is needed at 127.0.0.1:5432: {exc}", pytrace=False)
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432 for the compose stack: {exc}")
    connection.autocommit = True
    return connection


@dataclass
class Infrastructure:
    database: str
    role_created: bool = False
    redis_process: subprocess.Popen | None = None
    s3: S3Server | None = None


def start_redis(folder: Path, port: int) -> subprocess.Popen:
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("redis-server is needed for the compose stack's redis service", pytrace=False)
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"],
        cwd=folder,
        stdout=open(folder / "redis.log", "wb"),  # noqa: SIM115 - handed to the child
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if redis.Redis(port=port, socket_connect_timeout=1).ping():
                return process
        except redis.RedisError:
            time.sleep(0.2)
    stop_group(process)
    pytest.fail("redis-server did not start", pytrace=False)


def stop_group(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the process group this test started (by its id), SIGKILL what is left after ``timeout``."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # children the leader left behind (gunicorn, prefork pools)
    process.wait()


# --- the stack --------------------------------------------------------------------------------------------------


class Stack:
    def __init__(self, services: dict[str, Service], started_at: float) -> None:
        self.services = services
        self.started_at = started_at

    def start(self, service: Service) -> None:
        service.log = Path(service.env["HOME"]).parent / "output.log"
        with open(service.log, "wb") as log:
            service.process = subprocess.Popen(
                service.argv, cwd=ROOT, env=service.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def tail(self, service: Service, lines: int = 40) -> str:
        if service.log is None or not service.log.exists():
            return "(no output)"
        return "\n".join(service.log.read_text(errors="replace").splitlines()[-lines:])

    def fail_if_any_exited(self) -> None:
        for service in self.services.values():
            if service.process is not None and service.process.poll() is not None:
                pytest.fail(
                    f"compose service {service.name} exited with {service.process.returncode}:\n{self.tail(service)}",
                    pytrace=False,
                )

    def check_health(self, service: Service) -> bool:
        try:
            result = subprocess.run(
                service.healthcheck,
                cwd=ROOT,
                env=service.env,
                capture_output=True,
                timeout=service.healthcheck_timeout,
            )
        except subprocess.TimeoutExpired:
            return False
        service.extra["last_check"] = (result.stdout + result.stderr).decode(errors="replace")[-1500:]
        return result.returncode == 0

    def up(self) -> float:
        """Start the services in depends_on order and wait for every health check; the seconds it took."""
        order = [name for name in startup_order(self.compose_graph()) if name in self.services]
        deadline = time.monotonic() + HEALTHY_WITHIN_SECONDS
        while True:
            for name in order:
                service = self.services[name]
                if service.process is None and self._dependencies_met(service):
                    self.start(service)
            self.fail_if_any_exited()
            waiting = [s for s in self.services.values() if s.healthy_at is None]
            for service in waiting:
                if service.process is None:
                    continue
                if service.healthcheck is None or self.check_health(service):  # no check: running is all it has
                    service.healthy_at = time.monotonic() - self.started_at
            if all(s.healthy_at is not None for s in self.services.values()):
                return max(s.healthy_at for s in self.services.values())
            if time.monotonic() > deadline:
                late = [s for s in self.services.values() if s.healthy_at is None]
                details = "\n".join(
                    f"--- {s.name}: "
                    + (
                        "never started (waiting for its depends_on)"
                        if s.process is None
                        else "health check never passed"
                    )
                    + f"\nlast check: {s.extra.get('last_check', '-')}\n{self.tail(s)}"
                    for s in late
                )
                pytest.fail(
                    f"compose services not healthy in {HEALTHY_WITHIN_SECONDS}s: {[s.name for s in late]}\n{details}",
                    pytrace=False,
                )
            time.sleep(1)

    def compose_graph(self) -> dict[str, dict[str, Any]]:
        graph = {name: {"depends_on": list(s.depends_on)} for name, s in self.services.items()}
        graph.update({name: {} for name in INFRA_SERVICES})
        return graph

    def _dependencies_met(self, service: Service) -> bool:
        for dependency, condition in service.depends_on.items():
            if dependency in INFRA_SERVICES:
                continue  # set up before any service starts
            other = self.services[dependency]
            if condition == "service_healthy" and other.healthy_at is None:
                return False
            if other.process is None:
                return False
        return True

    def stop(self) -> None:
        for service in reversed(list(self.services.values())):
            if service.process is not None:
                stop_group(service.process)

    def exec(self, name: str, *argv: str) -> str:
        """``docker compose exec <name> ...``: the service's environment, no entry point."""
        result = subprocess.run(
            list(argv), cwd=ROOT, env=self.services[name].env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"exec in {name}: {' '.join(argv)}\n{result.stdout}\n{result.stderr[-3000:]}"
        return result.stdout

    def group_pids(self, name: str) -> list[int]:
        """Every live process of the service (its process group)."""
        leader = self.services[name].process.pid
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getpgid(int(entry)) == leader:
                        found.append(int(entry))
                except ProcessLookupError:
                    continue
        return found


def loaded_ml_libraries(pid: int) -> set[str]:
    """The TensorFlow / ONNX Runtime shared libraries a process has mapped (what importing them leaves)."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return set()
    return {Path(line.split()[-1]).name for line in maps.splitlines() if any(lib in line for lib in ML_LIBRARIES)}


# --- HTTP as a tenant sees it -----------------------------------------------------------------------------------


class Client:
    """Calls to web behind a TLS proxy (a Host it serves, X-Forwarded-Proto: https) and to serving."""

    def __init__(self, web: str, serving: str, host: str, key: str) -> None:
        self.web, self.serving, self.host, self.key = web, serving, host, key

    def call(self, method: str, url: str, body: bytes | None = None, content_type: str = "application/json") -> Any:
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": content_type}
        if url.startswith(self.web):
            headers |= {"Host": self.host, "X-Forwarded-Proto": "https"}
        request = urllib.request.Request(url, method=method, data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {url} -> {exc.code}: {exc.read()[:2000]!r}") from exc

    def api(self, method: str, path: str, payload: dict | None = None) -> Any:
        body = json.dumps(payload).encode() if payload is not None else None
        return self.call(method, f"{self.web}{path}", body)

    def upload(self, name: str, label_column: str, content: bytes) -> dict:
        boundary = uuid.uuid4().hex
        fields = [("name", name), ("label_column", label_column), ("column_tags", "{}")]
        body = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields
        )
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="clicks.csv"\r\n'
                "Content-Type: text/csv\r\n\r\n"
            ).encode()
            + content
            + f"\r\n--{boundary}--\r\n".encode()
        )
        return self.call("POST", f"{self.web}/api/v1/datasets", body, f"multipart/form-data; boundary={boundary}")

    def wait(self, path: str, done: set[str], timeout: float, stack: Stack) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stack.fail_if_any_exited()
            item = self.api("GET", path)
            if item["status"] in done:
                return item
            time.sleep(1)
        raise AssertionError(f"{path} still {item['status']} after {timeout}s")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 302 comes back as itself, with its Set-Cookie


class Browser:
    """A person on the dashboard behind the TLS proxy: session and CSRF cookies (Secure: kept by hand), Origin."""

    def __init__(self, web: str, host: str) -> None:
        self.web, self.host = web, host
        self.cookies: dict[str, str] = {}
        self.opener = urllib.request.build_opener(_NoRedirects)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        headers = {
            "Host": self.host,
            "X-Forwarded-Proto": "https",
            "Origin": f"https://{self.host}",
            "Referer": f"https://{self.host}{path}",
            "Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()),
            **(headers or {}),
        }
        request = urllib.request.Request(f"{self.web}{path}", method=method, data=body, headers=headers)
        try:
            response = self.opener.open(request, timeout=60)
        except urllib.error.HTTPError as exc:
            response = exc
        with response:
            for header in response.headers.get_all("Set-Cookie") or []:
                cookie = http.cookies.SimpleCookie(header)
                self.cookies.update({name: morsel.value for name, morsel in cookie.items()})
            return response.status, dict(response.headers), response.read()

    def sign_in(self, email: str, password: str) -> None:
        status, _, page = self.request("GET", "/login/")
        assert status == 200, page[:500]
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1].decode()
        form = urllib.parse.urlencode({"username": email, "password": password, "csrfmiddlewaretoken": token})
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        status, _, page = self.request("POST", "/login/", form.encode(), headers)
        assert status == 302 and "sessionid" in self.cookies, (status, page[:500])


def click_csv(rows: int) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(ctr_rows(rows, random.Random(7)))  # noqa: S311 - sample data
    return out.getvalue().encode()


# --- the test ---------------------------------------------------------------------------------------------------


@pytest.fixture
def compose_stack(tmp_path, request) -> Iterator[tuple[Stack, Local, dict[str, str]]]:
    """The infrastructure, then the application services; everything stopped and removed however it ends."""
    started_at = time.monotonic()
    variables = operator_variables()
    compose = load_compose(variables)
    admin = postgres_admin()
    infrastructure = Infrastructure(database=f"compose_test_{uuid.uuid4().hex[:10]}")
    stack = None
    try:
        local = Local(
            database=infrastructure.database,
            redis_port=free_port(),
            s3_port=free_port_block(),
            web_port=free_port(),
            serving_port=free_port(),
            cpu_metrics_port=free_port(),
            gpu_metrics_port=free_port(),
            webhooks_metrics_port=free_port(),
            tmp=tmp_path,
        )
        user = "platform"  # compose's POSTGRES_USER: the role exists as the postgres image would create it
        assert compose["services"]["postgres"]["environment"]["POSTGRES_USER"] == user
        with admin.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [user])
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE ROLE "{user}" LOGIN PASSWORD %s', [variables["POSTGRES_PASSWORD"]])
                infrastructure.role_created = True
            cursor.execute(f'CREATE DATABASE "{infrastructure.database}" OWNER "{user}"')
        infrastructure.redis_process = start_redis(tmp_path / "redis", local.redis_port)
        s3_env = compose["services"]["s3"]["environment"]
        infrastructure.s3 = start_s3_server(
            data_dir=tmp_path / "s3",
            access_key=s3_env["AWS_ACCESS_KEY_ID"],
            secret_key=s3_env["AWS_SECRET_ACCESS_KEY"],
            s3_port=local.s3_port,
        )
        stack = Stack(build_services(compose, local), started_at)
        yield stack, local, variables
    finally:
        if stack is not None:
            stack.stop()
        if infrastructure.s3 is not None:
            infrastructure.s3.stop()
        if infrastructure.redis_process is not None:
            stop_group(infrastructure.redis_process)
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{infrastructure.database}" WITH (FORCE)')
            if infrastructure.role_created:
                cursor.execute('DROP ROLE IF EXISTS "platform"')
        admin.close()


def test_the_compose_stack_comes_up_healthy_and_runs_the_main_job(compose_stack, request):
    stack, local, variables = compose_stack
    s3_env = {k: v for k, v in stack.services["web"].env.items() if k.startswith("S3_")}
    assert s3_env["S3_ACCESS_KEY_ID"] == variables.get("S3_ACCESS_KEY_ID", "platform")

    # What the host publishes is what the processes listen on (the test's clients use those ports, rewritten).
    services = load_compose(variables)["services"]
    published = {name: [p.rpartition(":")[2] for p in services[name]["ports"]] for name in ("web", "serving", "s3")}
    assert published == {"web": ["8000"], "serving": ["8001"], "s3": ["8333"]}, published

    healthy_after = stack.up()

    # An operator creates a tenant and a key in web (docker compose exec web python manage.py ...).
    tenant = json.loads(
        stack.exec(
            "web",
            "python",
            "manage.py",
            "create_tenant",
            "--name",
            "Compose Test",
            "--owner-email",
            "ops@compose.test",
            "--json",
        )
        .strip()
        .splitlines()[-1]
    )
    key = json.loads(
        stack.exec(
            "web",
            "python",
            "manage.py",
            "create_api_key",
            "--tenant",
            tenant["slug"],
            "--scopes",
            "read,write,predict",
            "--role",
            "admin",
            "--json",
        )
        .strip()
        .splitlines()[-1]
    )
    raw_key = key["api_key"]
    assert raw_key.startswith("mlp_") and key["slug"] == tenant["slug"], key

    # A tenant uploads, trains, promotes and predicts.
    host = stack.services["web"].env["ALLOWED_HOSTS"].split(",")[0]
    client = Client(f"http://127.0.0.1:{local.web_port}", f"http://127.0.0.1:{local.serving_port}", host, raw_key)
    content = click_csv(600)
    created = client.upload("clicks", "clicked", content)
    dataset = client.wait(f"/api/v1/datasets/{created['id']}", {"ready", "invalid"}, 90, stack)
    assert dataset["status"] == "ready", dataset
    job = client.api(
        "POST",
        "/api/v1/jobs",
        {
            "dataset": dataset["id"],
            "template": "sequence_ctr",
            "model_name": "clicks-ctr",
            "label_column": "clicked",
            "params": TINY_CTR,
            "seed": 1,
        },
    )
    job = client.wait(f"/api/v1/jobs/{job['id']}", {"succeeded", "failed", "cancelled"}, JOB_WITHIN_SECONDS, stack)
    assert job["status"] == "succeeded", job
    version = job["model_version"]
    client.api("PUT", "/api/v1/models/clicks-ctr/aliases/production", {"version": version})
    rows = list(csv.DictReader(io.StringIO(content.decode())))
    answer = client.call(
        "POST",
        f"{client.serving}/v1/models/clicks-ctr:predict",
        json.dumps({"instances": [rows[0]["item_sequence"], rows[1]["item_sequence"]]}).encode(),
    )
    first_prediction_after = time.monotonic() - stack.started_at
    assert len(answer["predictions"]) == 2
    assert all(0.0 <= p["probability"] <= 1.0 for p in answer["predictions"]), answer

    # The dashboard's "try it" box: web calls serving server-side, at SERVING_URL.
    password = uuid.uuid4().hex
    stack.exec(
        "web",
        "python",
        "manage.py",
        "shell",
        "-c",
        f"from tenants.models import User; u = User.objects.get(email='ops@compose.test'); "
        f"u.set_password('{password}'); u.save()",
    )
    browser = Browser(client.web, host)
    browser.sign_in("ops@compose.test", password)
    instances = json.dumps({"instances": [rows[2]["item_sequence"]]}).encode()
    status, headers, body = browser.request(
        "POST",
        "/models/clicks-ctr/try/",
        instances,
        {"Content-Type": "application/json", "X-CSRFToken": browser.cookies["csrftoken"]},
    )
    assert status == 200, body[:1000]
    assert len(json.loads(body)["predictions"]) == 1 and headers["X-Model-Version"] == str(version)

    # Presigned URLs point where a tenant reaches S3 (S3_PUBLIC_ENDPOINT_URL), and S3 takes the part there.
    part_bytes = b"user_id,item_sequence,clicked\nu1,1 2 3,1\n"
    upload = client.api(
        "POST",
        "/api/v1/datasets/uploads",
        {"name": "presigned", "size": len(part_bytes), "filename": "p.csv", "label_column": "clicked"},
    )
    url = upload["parts"][0]["url"]
    assert url.startswith(f"http://localhost:{local.s3_port}/"), url
    with urllib.request.urlopen(urllib.request.Request(url, data=part_bytes, method="PUT"), timeout=30) as put:
        assert put.status == 200 and put.headers["ETag"]
    client.api("DELETE", f"/api/v1/datasets/uploads/{upload['id']}")

    # The API image's processes never load TensorFlow or ONNX Runtime; the trainer's did (the check sees them).
    for name in ("web", "worker-cpu", "worker-webhooks", "beat"):
        loaded = {pid: loaded_ml_libraries(pid) for pid in stack.group_pids(name)}
        assert not any(loaded.values()), f"{name} loaded ML libraries: {loaded}"
    assert any(loaded_ml_libraries(pid) for pid in stack.group_pids("worker-gpu")), "the trainer's maps show no TF"
    # Prometheus scrapes web and each worker with METRICS_TOKEN: requests by route, queues and jobs on web, task
    # durations on the worker that ran them.
    token = variables["METRICS_TOKEN"]
    web_metrics = scrape(f"http://127.0.0.1:{local.web_port}/metrics", token)
    assert 'training_jobs{status="succeeded"} 1.0' in web_metrics, web_metrics[:2000]
    assert 'route="/api/v1/jobs"' in web_metrics and "celery_queue_length" in web_metrics
    gpu_metrics = scrape(f"http://127.0.0.1:{local.gpu_metrics_port}/metrics", token)
    assert 'celery_task_seconds_count{state="success",task="training.tasks.train_model"}' in gpu_metrics
    assert "celery_task_seconds" in scrape(f"http://127.0.0.1:{local.cpu_metrics_port}/metrics", token)
    scrape(f"http://127.0.0.1:{local.webhooks_metrics_port}/metrics", token)  # answers (no task has run there yet)
    for port in (local.web_port, local.cpu_metrics_port, local.gpu_metrics_port, local.webhooks_metrics_port):
        with pytest.raises(urllib.error.HTTPError) as refused:
            scrape(f"http://127.0.0.1:{port}/metrics", "not-the-token")
        assert refused.value.code in (401, 403)

    # GUNICORN_WORKERS reaches gunicorn: the master and that many workers.
    assert len(stack.group_pids("web")) == 1 + int(variables["GUNICORN_WORKERS"])

    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    line = (
        f"compose stack as processes: all {len(stack.services)} services healthy after {healthy_after:.1f} s, "
        f"first prediction after {first_prediction_after:.1f} s ("
        + ", ".join(f"{s.name} {s.healthy_at:.1f} s" for s in stack.services.values())
        + ")"
    )
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # shown in `make test`'s output, not only with -s
            reporter.write_line("\n" + line)


def scrape(url: str, token: str) -> str:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


def test_compose_refuses_to_start_without_the_operators_secrets():
    """``cp compose.env.example .env`` alone is not enough: compose stops, naming a secret, as docker would."""
    with pytest.raises(ComposeError, match="|".join(SECRETS)):
        load_compose(read_env_file(COMPOSE_ENV_EXAMPLE))
    for secret in SECRETS:
        with pytest.raises(ComposeError, match=secret):
            load_compose(operator_variables() | {secret: ""})
