"""``Idempotency-Key`` on every write of the API (issue 12, "Retries never duplicate").

The create routes come from the URL configuration (tests/routes.py), so a create endpoint added later is
checked here without editing this file. Everything goes through HTTP against the real database and S3.
"""

from __future__ import annotations

import re
import threading
import uuid
from datetime import timedelta
from unittest import mock

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import OperationalError, connection
from django.test.client import encode_multipart
from django.urls import reverse
from django.utils import timezone

from datasets import services as dataset_services
from tenants import tasks as tenant_tasks
from tenants.models import ApiKey, IdempotencyRecord, Membership, Role
from tests.conftest import client_for
from tests.support.factories import CTR_CSV, make_dataset, make_key, make_model_version
from tests.support.routes import api_routes

HEADER = "HTTP_IDEMPOTENCY_KEY"
CREATE_ROUTES = [r for r in api_routes() if "post" in r.methods and not r.kwargs]


def _csv_file(content: bytes = CTR_CSV, name: str = "clicks.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="text/csv")


def create_request(route, tenant) -> tuple[dict, str]:
    """A valid request body (made fresh for each call: files are consumed) and its format, per create route."""
    name = route.name
    if name == "member-list":
        return {"email": "new-person@example.com", "role": "member"}, "json"
    if name == "api-key-list":
        return {"name": "ci", "scopes": ["read"]}, "json"
    if name == "dataset-list":
        return {"name": "clicks", "label_column": "clicked", "file": _csv_file()}, "multipart"
    if name == "dataset-upload-list":
        return {"name": "big", "size": 9 * 1024 * 1024, "filename": "big.csv"}, "json"
    if name == "job-list":
        dataset = _ready_dataset(tenant)
        body = {"dataset": str(dataset.id), "template": "sequence_ctr", "model_name": "ctr", "label_column": "clicked"}
        return body | {"params": {"epochs": 1}}, "json"
    return {}, "json"  # a create route added later: even a refused request must be replayed, not re-run


def _ready_dataset(tenant):
    existing = getattr(tenant, "_ready_dataset", None)
    if existing is None:
        existing = make_dataset(tenant, content=CTR_CSV, name="clicks", label_column="clicked")
        dataset_services.validate_dataset(dataset_id=existing.id)
        tenant._ready_dataset = existing
    return existing


def post(api, route, tenant, key: str):
    body, fmt = create_request(route, tenant)
    return api.post(reverse(route.name), body, format=fmt, **{HEADER: key})


def rows_of(route, tenant) -> int:
    return route.view_class.scoped_model.objects.for_tenant(tenant).count()


KNOWN_CREATES = {"member-list", "api-key-list", "dataset-list", "dataset-upload-list", "job-list"}


def test_the_walk_finds_the_creates_the_issue_names():
    assert {r.name for r in CREATE_ROUTES} >= KNOWN_CREATES


@pytest.mark.django_db
@pytest.mark.parametrize("route", CREATE_ROUTES, ids=str)
def test_every_create_route_replays_the_first_answer(route, api_a, tenant_a):
    tenant = tenant_a.tenant
    before = rows_of(route, tenant)
    first = post(api_a, route, tenant, "retry-1")
    after_first = rows_of(route, tenant)
    retry = post(api_a, route, tenant, "retry-1")
    assert retry.status_code == first.status_code
    assert retry.content == first.content
    assert retry["Content-Type"] == first["Content-Type"]
    assert retry["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert rows_of(route, tenant) == after_first  # the retry created nothing
    if route.name in KNOWN_CREATES:
        assert first.status_code == 201, first.json()
    if first.status_code == 201:
        assert after_first == before + 1
    fresh = post(api_a, route, tenant, "another-key")  # a new key is a new request
    assert "Idempotent-Replayed" not in fresh


@pytest.mark.django_db
def test_a_lost_answer_is_replayed_with_the_new_keys_secret_once_stored_sealed(api_a, tenant_a):
    body = {"name": "deploy", "scopes": ["read", "write"]}
    first = api_a.post("/api/v1/api-keys", body, format="json", **{HEADER: "create-deploy-key"})
    assert first.status_code == 201
    retry = api_a.post("/api/v1/api-keys", body, format="json", **{HEADER: "create-deploy-key"})
    assert retry.status_code == 201 and retry.json() == first.json()
    assert ApiKey.objects.for_tenant(tenant_a.tenant).filter(name="deploy").count() == 1
    secret = first.json()["key"].encode()
    record = IdempotencyRecord.objects.for_tenant(tenant_a.tenant).get(key="create-deploy-key")
    assert record.response_status == 201 and secret not in bytes(record.response_body)  # never in clear


@pytest.mark.django_db
def test_the_same_key_with_another_request_is_422(api_a, tenant_a):
    key = "add-person"
    first = api_a.post("/api/v1/members", {"email": "a@example.com"}, format="json", **{HEADER: key})
    assert first.status_code == 201
    other_body = api_a.post("/api/v1/members", {"email": "b@example.com"}, format="json", **{HEADER: key})
    assert other_body.status_code == 422
    assert other_body.json()["error"]["code"] == "idempotency_key_reused"
    other_path = api_a.post("/api/v1/api-keys", {"name": "x", "scopes": ["read"]}, format="json", **{HEADER: key})
    assert other_path.status_code == 422
    emails = set(Membership.objects.for_tenant(tenant_a.tenant).values_list("user__email", flat=True))
    assert "a@example.com" in emails and "b@example.com" not in emails
    assert ApiKey.objects.for_tenant(tenant_a.tenant).filter(name="x").count() == 0


@pytest.mark.django_db
def test_another_caller_of_the_same_tenant_never_gets_the_first_callers_answer(api_a, tenant_a):
    """An admin's key reusing an owner's Idempotency-Key and body must not receive the owner key's secret."""
    body = {"name": "root", "scopes": ["read", "write", "predict"], "role": "owner"}
    owners = api_a.post("/api/v1/api-keys", body, format="json", **{HEADER: "make-root"})
    assert owners.status_code == 201
    admin = client_for(make_key(tenant_a.tenant, role=Role.ADMIN).raw_key)
    stolen = admin.post("/api/v1/api-keys", body, format="json", **{HEADER: "make-root"})
    assert stolen.status_code == 422 and stolen.json()["error"]["code"] == "idempotency_key_reused"
    assert owners.json()["key"] not in stolen.content.decode()
    assert ApiKey.objects.for_tenant(tenant_a.tenant).filter(name="root").count() == 1


@pytest.mark.django_db
def test_keys_belong_to_one_tenant(api_a, api_b, tenant_a, tenant_b):
    body = {"name": "ci", "scopes": ["read"]}
    mine = api_a.post("/api/v1/api-keys", body, format="json", **{HEADER: "shared-key"})
    theirs = api_b.post("/api/v1/api-keys", body, format="json", **{HEADER: "shared-key"})
    assert mine.status_code == theirs.status_code == 201
    assert "Idempotent-Replayed" not in theirs and theirs.json()["key"] != mine.json()["key"]
    assert ApiKey.objects.for_tenant(tenant_b.tenant).filter(name="ci").count() == 1


@pytest.mark.django_db
def test_a_multipart_retry_with_another_boundary_is_the_same_request(api_a, tenant_a):
    def send(boundary: str, content: bytes):
        body = encode_multipart(boundary, {"name": "clicks", "label_column": "clicked", "file": _csv_file(content)})
        return api_a.post(
            "/api/v1/datasets", body, content_type=f"multipart/form-data; boundary={boundary}", **{HEADER: "upload-1"}
        )

    first = send("first-boundary-1234", CTR_CSV)
    assert first.status_code == 201, first.json()
    retry = send("another-boundary-5678", CTR_CSV)
    assert retry.status_code == 201 and retry["Idempotent-Replayed"] == "true" and retry.content == first.content
    other_file = send("first-boundary-1234", CTR_CSV + b"7 8 9,1\n")
    assert other_file.status_code == 422 and other_file.json()["error"]["code"] == "idempotency_key_reused"
    assert tenant_a.tenant.datasets_dataset_set.count() == 1


@pytest.mark.django_db
def test_a_model_alias_put_is_replayed(api_a, tenant_a):
    version = make_model_version(tenant_a.tenant, name="clicks")
    url = "/api/v1/models/clicks/aliases/production"
    first = api_a.put(url, {"version": version.version}, format="json", **{HEADER: "promote-1"})
    assert first.status_code == 200, first.json()
    retry = api_a.put(url, {"version": version.version}, format="json", **{HEADER: "promote-1"})
    assert retry["Idempotent-Replayed"] == "true" and retry.content == first.content


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", " padded ", "x" * 256, "caf\u00e9", "tab\there", "nul\x00"])
def test_malformed_keys_are_400_and_change_nothing(api_a, tenant_a, key):
    before = ApiKey.objects.for_tenant(tenant_a.tenant).count()
    response = api_a.post("/api/v1/api-keys", {"name": "ci", "scopes": ["read"]}, format="json", **{HEADER: key})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_idempotency_key"
    assert ApiKey.objects.for_tenant(tenant_a.tenant).count() == before
    longest = "k" * 255
    ok = api_a.post("/api/v1/api-keys", {"name": "ci", "scopes": ["read"]}, format="json", **{HEADER: longest})
    assert ok.status_code == 201


@pytest.mark.django_db
def test_a_refused_caller_does_not_use_up_the_key(tenant_a):
    viewer = make_key(tenant_a.tenant, scopes=("read",), role=Role.VIEWER)
    body = {"email": "someone@example.com"}
    refused = client_for(viewer.raw_key).post("/api/v1/members", body, format="json", **{HEADER: "k1"})
    assert refused.status_code == 403
    allowed = client_for(tenant_a.raw_key).post("/api/v1/members", body, format="json", **{HEADER: "k1"})
    assert allowed.status_code == 201 and "Idempotent-Replayed" not in allowed


@pytest.mark.django_db
def test_server_errors_are_not_kept_so_the_retry_runs(api_a, tenant_a):
    body = {"email": "later@example.com"}
    with mock.patch("tenants.services.add_member", side_effect=OperationalError("connection lost")):
        failed = api_a.post("/api/v1/members", body, format="json", **{HEADER: "k-503"})
    assert failed.status_code == 503
    assert not IdempotencyRecord.objects.for_tenant(tenant_a.tenant).filter(key="k-503").exists()
    retry = api_a.post("/api/v1/members", body, format="json", **{HEADER: "k-503"})
    assert retry.status_code == 201 and "Idempotent-Replayed" not in retry
    assert Membership.objects.for_tenant(tenant_a.tenant).filter(user__email="later@example.com").count() == 1


@pytest.mark.django_db
def test_answers_expire_after_24_hours(api_a, tenant_a):
    body = {"name": "nightly", "scopes": ["read"]}
    first = api_a.post("/api/v1/api-keys", body, format="json", **{HEADER: "nightly"})
    record = IdempotencyRecord.objects.for_tenant(tenant_a.tenant).get(key="nightly")
    assert timedelta(hours=23, minutes=59) < record.expires_at - record.created_at <= timedelta(hours=24)
    past = timezone.now() - timedelta(hours=25)
    IdempotencyRecord.objects.filter(pk=record.pk).update(created_at=past, expires_at=past + timedelta(hours=24))
    again = api_a.post("/api/v1/api-keys", body, format="json", **{HEADER: "nightly"})
    assert again.status_code == 201 and "Idempotent-Replayed" not in again
    assert again.json()["key"] != first.json()["key"]  # an expired key is a new request

    IdempotencyRecord.objects.for_tenant(tenant_a.tenant).update(expires_at=past)
    assert tenant_tasks.purge_idempotency_records() == 1  # the hourly housekeeping task
    assert not IdempotencyRecord.objects.filter(tenant=tenant_a.tenant).exists()


@pytest.mark.django_db(transaction=True)
def test_a_retry_while_the_first_request_runs_is_409(tenant_a):
    from tenants import services

    running, release = threading.Event(), threading.Event()
    real_add_member = services.add_member

    def slow_add_member(**kwargs):
        running.set()
        assert release.wait(30)
        return real_add_member(**kwargs)

    body = {"email": "slow@example.com"}
    answers = {}

    def first_request():
        try:
            answers["first"] = client_for(tenant_a.raw_key).post(
                "/api/v1/members", body, format="json", **{HEADER: "slow-1"}
            )
        finally:
            connection.close()

    with mock.patch("tenants.services.add_member", side_effect=slow_add_member):
        thread = threading.Thread(target=first_request)
        thread.start()
        assert running.wait(30)
        api = client_for(tenant_a.raw_key)
        retry = api.post("/api/v1/members", body, format="json", **{HEADER: "slow-1"})
        other = api.post("/api/v1/members", {"email": "other@example.com"}, format="json", **{HEADER: "slow-1"})
        release.set()
        thread.join(30)
    assert retry.status_code == 409 and retry.json()["error"]["code"] == "idempotency_request_in_progress"
    assert other.status_code == 409
    assert answers["first"].status_code == 201
    replay = client_for(tenant_a.raw_key).post("/api/v1/members", body, format="json", **{HEADER: "slow-1"})
    assert replay.status_code == 201 and replay["Idempotent-Replayed"] == "true"
    assert replay.content == answers["first"].content
    assert Membership.objects.for_tenant(tenant_a.tenant).filter(user__email="slow@example.com").count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_requests_create_one_row(tenant_a):
    count = 6
    barrier = threading.Barrier(count)
    answers: list = [None] * count
    body = {"name": "raced", "scopes": ["read"]}

    def run(i):
        try:
            api = client_for(tenant_a.raw_key)
            barrier.wait()
            answers[i] = api.post("/api/v1/api-keys", body, format="json", **{HEADER: "raced-key"})
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {201, 409} and statuses.count(201) >= 1, statuses
    created = [a.json()["key"] for a in answers if a.status_code == 201]
    assert len(set(created)) == 1  # every 201 is the same answer (the first, or its replay)
    assert ApiKey.objects.for_tenant(tenant_a.tenant).filter(name="raced").count() == 1


@pytest.mark.django_db
def test_the_schema_documents_the_header_on_every_write(client):
    schema = client.get("/api/schema/", {"format": "json"}).json()
    writes = [
        (path, method, operation)
        for path, operations in schema["paths"].items()
        if path.startswith("/api/v1/")
        for method, operation in operations.items()
        if method in {"post", "put", "patch"}
    ]
    assert {path for path, method, _ in writes if method == "post"} >= {
        "/api/v1/members",
        "/api/v1/api-keys",
        "/api/v1/datasets",
        "/api/v1/datasets/uploads",
        "/api/v1/jobs",
    }
    for path, method, operation in writes:
        headers = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "header"}
        assert "Idempotency-Key" in headers, (path, method)
        assert headers["Idempotency-Key"]["schema"]["maxLength"] == 255
        for status in ("409", "422"):
            assert operation["responses"][status]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }, (path, method, status)
        assert re.fullmatch(headers["Idempotency-Key"]["schema"]["pattern"], str(uuid.uuid4()))
