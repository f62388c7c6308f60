"""The Python SDK and the ``mlp`` CLI (clients/python) against a live stack: the API under gunicorn, a Celery
worker and the serving process, all real processes on the test database and the real S3.

The CLI runs as a subprocess with its key in ``MLP_API_KEY``, the way a tenant's engineer runs it; the SDK's
error mapping and retries are checked in this process.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import re
import sys
import threading
import tomllib
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from mlplatform_client import (
    AuthenticationError,
    BadRequestError,
    Client,
    ConfigurationError,
    ConflictError,
    Explanation,
    NotFoundError,
    load_settings,
)
from mlplatform_client.api_types import OPERATIONS
from mlplatform_client.config import config_path, write_profile
from mlplatform_client.resources import ROUTES
from mlplatform_client.uploads import MultipartBody, form_fields

from datasets.sample_data import write_csv
from tests.support.clients import cli_env, live_stack, mlp, mlp_json
from tests.support.datasets import PART, big_csv
from tests.support.factories import make_dataset
from tests.support.jobs import TINY_CTR
from tests.support.serving import publish_model
from tests.support.workers import ROOT

GENERATOR = ROOT / "clients" / "python" / "scripts" / "generate_models.py"
TYPES = ROOT / "clients" / "python" / "mlplatform_client" / "api_types.py"
VISITORS = ["12 85 3 9 41 7 7 120", "7 7 120"]


@pytest.fixture(scope="module")
def stack(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock(), live_stack() as running:
        yield running


def _params(params: dict) -> list[str]:
    return [arg for key, value in params.items() for arg in ("--param", f"{key}={json.dumps(value)}")]


def _ctr_csv(path: Path, rows: int, seed: int = 5) -> Path:
    with path.open("w", newline="") as out:
        write_csv("ctr", rows, out, seed=seed)
    return path


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_cli_uploads_trains_promotes_predicts_downloads(stack, tenant_a, tmp_path):
    env = cli_env(stack, tenant_a.raw_key, tmp_path / "home")

    # A small file: one streamed form POST (fields first), validated by the worker.
    small = _ctr_csv(tmp_path / "clicks.csv", 400)
    direct = mlp_json("datasets", "upload", small, "--name", "clicks", "--label-column", "clicked", "--json", env=env)
    assert (direct["upload"], direct["status"], direct["row_count"]) == ("direct", "ready", 400)
    assert direct["sha256"] == hashlib.sha256(small.read_bytes()).hexdigest()

    # Over a (lowered) threshold: presigned multipart, two 8 MiB-minimum parts PUT straight to S3 in parallel.
    big = tmp_path / "big.csv"
    big.write_bytes(big_csv(PART + 64 * 1024))
    parted = mlp_json(
        "--json", "datasets", "upload", big, "--name", "big", "--label-column", "clicked",
        "--multipart-threshold", "1M", "--parallel", "2", env=env,
    )  # fmt: skip
    assert (parted["upload"], parted["status"], parted["size_bytes"]) == ("multipart", "ready", big.stat().st_size)
    assert parted["sha256"] == hashlib.sha256(big.read_bytes()).hexdigest()
    assert not list((tmp_path / "home" / "state").rglob("*.json"))  # the resume state goes once completed
    preview = mlp_json("datasets", "preview", direct["id"], "--rows", "3", "--json", env=env)
    assert preview["columns"] == ["user_id", "item_sequence", "clicked"] and len(preview["rows"]) == 3
    listed = mlp_json("--json", "datasets", "list", env=env)
    assert {d["id"] for d in listed} == {direct["id"], parted["id"]}

    # Train, following the epochs live; the published version is printed.
    common = ["--dataset", direct["id"], "--template", "sequence_ctr", "--model-name", "ctr", *_params(TINY_CTR)]
    followed = mlp("jobs", "run", *common, "--follow", env=env, timeout=400)
    assert "epoch 1  " in followed.stdout and "loss" in followed.stdout, followed.stdout
    assert "succeeded: ctr version 1" in followed.stdout, followed.stdout
    # A second version, submitted, then followed as JSON lines.
    job = mlp_json("--json", "jobs", "run", *common, "--seed", "2", env=env)
    events = [
        json.loads(line)
        for line in mlp("--json", "jobs", "follow", job["id"], env=env, timeout=400).stdout.splitlines()
    ]
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1]
    assert events[-1]["event"] == "done" and events[-1]["job"]["model_version"] == 2
    assert "loss" in next(e for e in events if e["event"] == "epoch")

    models = mlp_json("models", "list", "--json", env=env)
    assert [(m["name"], m["latest_version"]) for m in models] == [("ctr", 2)]
    assert [v["version"] for v in mlp_json("models", "list", "ctr", "--json", env=env)] == [2, 1]
    assert mlp_json("models", "promote", "ctr", "1", "--json", env=env)["aliases"] == {"production": 1}

    # TF Serving REST, by the production alias (no version named).
    body = json.dumps({"instances": VISITORS})
    answer = mlp("predict", "ctr", "--json", body, env=env)
    assert "answered by ctr version 1" in answer.stderr
    predictions = json.loads(answer.stdout)["predictions"]
    assert len(predictions) == 2 and all(0 <= p["probability"] <= 1 for p in predictions)

    assert mlp_json("models", "promote", "ctr", "2", "--json", env=env)["aliases"] == {"production": 2}
    # KServe v2 by alias (resolved through the registry: v2 has no labels), from TF Serving rows in a file.
    request_file = tmp_path / "request.json"
    request_file.write_text(body)
    v2 = mlp("predict", "ctr", "--file", request_file, "--protocol", "kserve", "--alias", "production", env=env)
    v2_body = json.loads(v2.stdout)
    assert v2_body["model_version"] == "2" and "answered by ctr version 2" in v2.stderr
    assert {o["name"] for o in v2_body["outputs"]} >= {"probability"}
    pinned = json.loads(mlp("predict", "ctr", "--json", body, "--version", "1", env=env).stdout)
    assert pinned["predictions"][0]["probability"] == predictions[0]["probability"]  # version 1 answers alike

    # Models that leave: roll back, download (checked against the manifest), export.
    assert mlp_json("models", "rollback", "ctr", "--json", env=env)["aliases"] == {"production": 1}
    out = tmp_path / "exported"
    downloaded = mlp_json(
        "models", "download", "ctr", "1", "--out", out, "--archive", tmp_path / "v1.tgz", "--json", env=env
    )
    folder = Path(downloaded["path"])
    assert folder == out / "ctr" / "1"
    assert {"saved_model.pb", "manifest.json"} <= set(downloaded["files"])
    assert any(f.startswith("variables/") for f in downloaded["files"])
    assert (tmp_path / "v1.tgz").stat().st_size > 0
    by_file = mlp_json(
        "models", "download", "ctr", "1", "--out", tmp_path / "files", "--via", "files", "--json", env=env
    )  # fmt: skip
    assert by_file["files"] == downloaded["files"]
    assert "model_config_list" in mlp("models", "export", "ctr", "--engine", "tf-serving", env=env).stdout
    assert "InferenceService" in mlp("models", "export", "ctr", "--engine", "kserve", env=env).stdout


@pytest.mark.django_db(transaction=True)
@pytest.mark.broker
def test_errors_are_typed_with_code_and_request_id(stack, tenant_a, tenant_b, tmp_path):
    client = Client(stack.api_url, tenant_a.raw_key, serving_url=stack.serving_url, max_retries=0)
    theirs = make_dataset(tenant_b.tenant)
    with pytest.raises(NotFoundError) as missing:
        client.datasets.get(str(theirs.id))  # another tenant's id: exactly like a missing one
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    assert missing.value.request_id and missing.value.request_id in str(missing.value)

    with pytest.raises(BadRequestError) as bad:
        client.jobs.create(dataset=str(uuid.uuid4()), template="sequence_ctr", model_name="m", label_column="y",
                           params={"epochs": "many"})  # fmt: skip
    assert bad.value.status == 400 and bad.value.code and bad.value.message
    with pytest.raises(BadRequestError) as unknown:
        client.request("POST", "/api/v1/jobs", json={"dataset": "x", "surprise": 1})
    assert unknown.value.code == "validation_error" and "surprise" in json.dumps(unknown.value.details)

    with pytest.raises(AuthenticationError):
        Client(stack.api_url, "mlp_not_a_key", max_retries=0).models.list()
    with pytest.raises(NotFoundError) as no_model:
        client.predict("no-such-model", {"instances": ["1 2"]})  # the serving process's own error body
    assert no_model.value.status == 404 and no_model.value.message

    env = cli_env(stack, tenant_a.raw_key, tmp_path / "home")
    shown = mlp("datasets", "show", str(theirs.id), env=env, expect=4)
    assert "404 not_found" in shown.stderr and "request" in shown.stderr
    assert "error" in mlp("jobs", "run", "--dataset", str(uuid.uuid4()), "--template", "sequence_ctr",
                          "--model-name", "m", "--label-column", "y", env=env, expect=1).stderr  # fmt: skip
    assert mlp("models", "list", env=env | {"MLP_API_KEY": "mlp_wrong"}, expect=5).returncode == 5
    # A key kept in a profile of the config file instead of the environment; never printed back.
    env_without_key = {k: v for k, v in env.items() if k != "MLP_API_KEY"}
    configure = ["configure", "--profile", "work", "--api-url", stack.api_url, "--serving-url", stack.serving_url]
    saved = mlp(*configure, "--api-key", tenant_a.raw_key, env=env_without_key)
    who = mlp("--profile", "work", "whoami", "--json", env=env_without_key)
    assert tenant_a.raw_key not in saved.stderr + saved.stdout + who.stdout + who.stderr
    assert json.loads(who.stdout)["tenant"] == tenant_a.tenant.slug
    assert json.loads(who.stdout)["sources"]["api_key"].endswith("[profiles.work]")
    assert mlp("whoami", env=env_without_key, expect=2).stderr.startswith("error: no API key")
    # A dataset the worker finds invalid (one label class): the upload command fails with exit 3.
    one_class = tmp_path / "one.csv"
    one_class.write_text("item_sequence,clicked\n" + "1 2 3,1\n" * 50)
    failed = mlp("datasets", "upload", one_class, "--name", "one", "--label-column", "clicked", env=env, expect=3)
    assert "invalid" in failed.stderr

    # A job cancelled while it waits or runs: following it ends with exit 3 and the reason.
    dataset = client.datasets.wait(client.datasets.upload(_ctr_csv(tmp_path / "c.csv", 200), name="c")["id"])
    job = client.jobs.create(
        dataset=dataset["id"], template="sequence_ctr", model_name="c", label_column="clicked", params=TINY_CTR
    )
    assert mlp_json("jobs", "cancel", job["id"], "--json", env=env)["status"] in {"cancelled", "cancelling"}
    followed = mlp("jobs", "follow", job["id"], env=env, expect=3)
    assert f"job {job['id']} cancelled" in followed.stderr


@pytest.mark.django_db(transaction=True)
@pytest.mark.broker
def test_sdk_types_match_the_live_schema(stack):
    """The committed api_types.py is what the generator writes from the running API's schema; every route the
    SDK calls is one the schema documents."""
    spec = importlib.util.spec_from_file_location("generate_models", GENERATOR)
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    schema = requests.get(f"{stack.api_url}/api/schema/", params={"format": "json"}, timeout=60).json()
    assert generator.render(schema) == TYPES.read_text(), "run clients/python/scripts/generate_models.py"
    assert not ROUTES - OPERATIONS, sorted(ROUTES - OPERATIONS)


@pytest.mark.django_db(transaction=True)
@pytest.mark.broker
def test_an_interrupted_multipart_upload_resumes_with_the_parts_left(stack, tenant_a, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    client = Client(stack.api_url, tenant_a.raw_key)
    big = tmp_path / "big.csv"
    big.write_bytes(big_csv(PART + 1024))
    sent: list[int] = []

    def stop_in_the_second_part(n: int) -> None:
        sent.append(n)
        if sum(sent) > PART:
            raise KeyboardInterrupt  # Ctrl+C once part 1 is in S3 (one part at a time), while part 2 is sent

    options = {"name": "big", "label_column": "clicked", "multipart_threshold": 1, "concurrency": 1}
    with pytest.raises(KeyboardInterrupt):
        client.datasets.upload(big, progress=stop_in_the_second_part, **options)
    assert len(list((tmp_path / "state").rglob("*.json"))) == 1
    sent.clear()
    dataset = client.datasets.upload(big, progress=sent.append, **options)
    assert sent[0] == PART and sum(sent[1:]) == big.stat().st_size - PART  # part 1 counted as done, part 2 sent
    assert [d["id"] for d in client.datasets.list(name="big")] == [dataset["id"]]  # the same upload, completed
    ready = client.datasets.wait(dataset["id"], timeout=120)
    assert ready["sha256"] == hashlib.sha256(big.read_bytes()).hexdigest()
    assert not list((tmp_path / "state").rglob("*.json"))


def test_the_sdk_imports_only_the_standard_library_and_its_three_dependencies():
    """The package installs anywhere: nothing of the platform (Django, its apps) and nothing it does not declare."""
    allowed = set(sys.stdlib_module_names) | {"requests", "click", "rich", "mlplatform_client"}
    package = ROOT / "clients" / "python" / "mlplatform_client"
    found = set()
    for path in [*package.glob("*.py"), GENERATOR]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    assert found and found <= allowed, sorted(found - allowed)
    declared = tomllib.loads((package.parent / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(re.split(r"[<>=!~ ]", d)[0] for d in declared) == ["click", "requests", "rich"]


def test_the_form_sends_its_fields_before_the_file_so_the_api_streams_it(tmp_path):
    """``column_tags`` before the file is what lets the API stream a direct upload to S3 (datasets/uploads.py)."""
    data = tmp_path / "d.csv"
    data.write_bytes(b"a,b\n1,2\n" * 100_000)
    fields = form_fields(name="d", fmt="csv", label_column="b", column_tags=None, pii_mode=None)
    sent: list[int] = []
    with data.open("rb") as handle:
        body = MultipartBody(fields, file=handle, filename="d.csv", size=data.stat().st_size, progress=sent.append)
        raw = b"".join(body)
        assert len(raw) == len(body) and sum(sent) == data.stat().st_size
        body.seek(0)  # a retry sends it again from the start
        assert b"".join(body) == raw
    order = [raw.index(f'name="{name}"'.encode()) for name in ("name", "format", "label_column", "column_tags")]
    assert order == sorted(order) and order[-1] < raw.index(b'name="file"')
    assert b'name="column_tags"\r\n\r\n{}\r\n' in raw and raw.endswith(f"--{body.boundary}--\r\n".encode())


class _Scripted(BaseHTTPRequestHandler):
    """Answers 503 with Retry-After, then 429, then 201, recording each request's Idempotency-Key."""

    answers: list[tuple[int, dict]] = []
    seen: list[str | None] = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append(self.headers.get("Idempotency-Key"))
        status, headers = type(self).answers.pop(0)
        body = json.dumps({"ok": True} if status < 400 else {"error": {"code": "busy", "message": "m", "details": {}}})
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


def test_retries_429_and_503_with_retry_after_and_one_idempotency_key():
    _Scripted.answers = [(503, {"Retry-After": "0"}), (429, {"Retry-After": "0"}), (201, {})]
    _Scripted.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = Client(f"http://127.0.0.1:{server.server_port}", "mlp_test", max_retries=3)
        assert client.post("/api/v1/jobs", {"x": 1}) == {"ok": True}
        _Scripted.answers = [(503, {"Retry-After": "0"})] * 2
        _Scripted.seen.clear()
        with pytest.raises(Exception) as gave_up:
            Client(f"http://127.0.0.1:{server.server_port}", "mlp_test", max_retries=1).post("/x", {})
        assert gave_up.value.status == 503 and gave_up.value.code == "busy"
    finally:
        server.shutdown()
    assert len(_Scripted.seen) == 2 and _Scripted.seen[0] == _Scripted.seen[1] and _Scripted.seen[0]


def test_settings_env_wins_over_the_profile_and_the_key_is_never_shown(tmp_path, capsys):
    path = tmp_path / "config.toml"
    write_profile(path, "staging", {"api_url": "http://staging:8000", "api_key": "mlp_from_file_secret"})
    write_profile(path, "default", {"api_url": "http://default:8000", "api_key": "mlp_default_secret"})
    assert path.stat().st_mode & 0o077 == 0  # owner-only: it holds keys
    env = {"MLP_CONFIG": str(path)}
    assert config_path(env) == path
    assert load_settings(env=env).api_url == "http://default:8000"
    staging = load_settings(env=env, profile="staging")
    assert (staging.api_url, staging.api_key, staging.profile) == (
        "http://staging:8000",
        "mlp_from_file_secret",
        "staging",
    )
    overridden = load_settings(env=env | {"MLP_API_KEY": "mlp_env_secret", "MLP_PROFILE": "staging"})
    assert (overridden.api_url, overridden.api_key) == ("http://staging:8000", "mlp_env_secret")
    assert overridden.sources["api_key"] == "$MLP_API_KEY"
    assert "secret" not in repr(overridden) and "secret" not in repr(Client(settings=overridden))
    with pytest.raises(ConfigurationError):
        load_settings(env=env, profile="nope")
    with pytest.raises(ConfigurationError):
        Client(settings=load_settings(env={"MLP_CONFIG": str(tmp_path / "missing.toml")}))
    assert "secret" not in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_sdk_and_cli_explain(stack, tenant_a, tenant_b, tmp_path):
    """``client.explain`` and ``mlp explain`` against a version trained by the worker (with its explain signature);
    the serving process's refusals come back typed (409 for a version published before explanations)."""
    client = Client(stack.api_url, tenant_a.raw_key, serving_url=stack.serving_url, max_retries=0)
    dataset = client.datasets.wait(client.datasets.upload(_ctr_csv(tmp_path / "x.csv", 300), name="x")["id"])
    job = client.jobs.create(
        dataset=dataset["id"], template="sequence_ctr", model_name="ctr", label_column="clicked", params=TINY_CTR
    )
    assert client.jobs.wait(job["id"], timeout=400)["status"] == "succeeded"

    explained = client.explain("ctr", VISITORS, version=1)
    assert isinstance(explained, Explanation) and explained.model_version == 1
    assert explained.predictions == client.predict("ctr", {"instances": VISITORS}, version=1).body["predictions"]
    assert len(explained.explanations) == len(VISITORS)
    (first,) = explained.explanations[0]["attributions"]
    assert first["output_name"] == "probability" and set(first["feature_attributions"]) == {"item_sequence"}
    tokens = [p["token"] for p in first["feature_attributions"]["item_sequence"]]
    assert set(tokens) <= set(VISITORS[0].split())
    with pytest.raises(NotFoundError):
        Client(stack.api_url, tenant_b.raw_key, serving_url=stack.serving_url, max_retries=0).explain("ctr", VISITORS)
    publish_model(tenant_a.tenant, name="plain")  # published before explanations existed
    with pytest.raises(ConflictError) as unavailable:
        client.explain("plain", ["1 2"])
    assert unavailable.value.status == 409 and "explanations_unavailable" in unavailable.value.message
    with pytest.raises(ValueError):
        client.explain("ctr", VISITORS, version=1, alias="production")

    # This checkout's client (the shared virtualenv's editable install may point at another checkout).
    env = cli_env(stack, tenant_a.raw_key, tmp_path / "home", PYTHONPATH=str(ROOT / "clients" / "python"))
    answer = mlp("explain", "ctr", "--json", json.dumps({"instances": VISITORS[:1]}), "--version", "1", env=env)
    assert "explained by ctr version 1" in answer.stderr
    body = json.loads(answer.stdout)
    assert body["predictions"] == explained.predictions[:1] and len(body["explanations"]) == 1
    predicted = mlp("predict", "ctr", "--json", json.dumps({"instances": VISITORS[:1]}), "--version", "1", env=env)
    assert json.loads(predicted.stdout)["predictions"] == body["predictions"]
    both = mlp("explain", "ctr", "--json", "{}", "--version", "1", "--alias", "x", env=env, expect=2)
    assert "not both" in both.stderr
    assert "must be" in mlp("explain", "ctr", "--json", '{"inputs": ["1"]}', env=env, expect=2).stderr
