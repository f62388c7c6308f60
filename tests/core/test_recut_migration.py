"""The re-cut moved models between apps with state-only migrations: a database populated under the schema before
the move migrates forward with every row intact, read back through the models' new homes."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

# The last migrations before the move: datasets lived in ``training`` and usage records in ``tenants``.
BEFORE = [
    ("tenants", "0006_tenant_plan_history"),
    ("training", "0002_attempts_runtime_budget"),
    ("serving", "0003_serving_process"),
    ("datasets", None),
    ("usage", None),
]
MOVED_TABLES = ["training_dataset", "training_datasetupload", "tenants_usagerecord"]
TOUCHED_TABLES = [*MOVED_TABLES, "training_trainingjob", "serving_modelversion"]


def _columns(table: str) -> list[str]:
    with connection.cursor() as cursor:
        return [column.name for column in connection.introspection.get_table_description(cursor, table)]


def _rows(table: str, columns: list[str]) -> list[tuple]:
    """The table's rows in ``columns`` (the columns it had before: later migrations may add others)."""
    names = ", ".join(connection.ops.quote_name(column) for column in columns)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {names} FROM {connection.ops.quote_name(table)} ORDER BY 1")  # noqa: S608
        return [tuple(str(value) for value in row) for row in cursor.fetchall()]


@pytest.fixture
def latest_schema_after():
    """Whatever the test did to the schema, the tests after it find the latest one."""
    yield
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def _populate(apps) -> dict[str, object]:
    """One of each moved row and of each row that points at one, under the old schema (historical models)."""
    get = apps.get_model
    plan = get("tenants", "Plan").objects.create(slug="old", name="Old")
    tenant = get("tenants", "Tenant").objects.create(name="Old", slug="old-tenant", plan=plan)
    dataset = get("training", "Dataset").objects.create(
        tenant=tenant, name="clicks", version=1, format="csv", status="ready", size_bytes=1234, sha256="a" * 64
    )
    second = get("training", "Dataset").objects.create(
        tenant=tenant, name="clicks", version=2, format="csv", status="uploading", duplicate_of=dataset
    )
    upload = get("training", "DatasetUpload").objects.create(
        tenant=tenant,
        dataset=second,
        s3_upload_id="up-1",
        declared_size=10,
        part_size=8,
        expires_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
    )
    job = get("training", "TrainingJob").objects.create(
        tenant=tenant, dataset=dataset, template="sequence_ctr", model_name="ctr", label_column="label"
    )
    model = get("serving", "RegisteredModel").objects.create(tenant=tenant, name="ctr")
    version = get("serving", "ModelVersion").objects.create(
        tenant=tenant, model=model, version=1, job=job, dataset=dataset, object_prefix="p/", size_bytes=99
    )
    usage = get("tenants", "UsageRecord").objects.create(
        tenant=tenant, day=dt.date(2026, 11, 3), kind="cpu_seconds", quantity=Decimal("12.5")
    )
    events = get("tenants", "AuditEvent").objects
    for kind, label in [("api_key", "api-key:abc123"), ("user", "ana@example.com"), ("operator", "operator:o@x.io")]:
        events.create(tenant=tenant, action="x", target_type="t", target_id="1", actor_kind=kind, actor_label=label)
    return {
        "tenant": tenant.pk,
        "dataset": dataset.pk,
        "second": second.pk,
        "upload": upload.pk,
        "job": job.pk,
        "version": version.pk,
        "usage": usage.pk,
    }


@pytest.mark.django_db(transaction=True)
def test_a_database_from_before_the_move_keeps_every_row(latest_schema_after):
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    ids = _populate(executor.loader.project_state([node for node in BEFORE if node[1]]).apps)
    content_types = executor.loader.project_state(BEFORE[:1]).apps.get_model("contenttypes", "ContentType")
    for app_label, model in [("training", "dataset"), ("training", "datasetupload"), ("tenants", "usagerecord")]:
        content_types.objects.get_or_create(app_label=app_label, model=model)
    columns = {table: _columns(table) for table in TOUCHED_TABLES}
    before = {table: _rows(table, columns[table]) for table in TOUCHED_TABLES}
    assert all(before[table] for table in TOUCHED_TABLES)

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert {table: _rows(table, columns[table]) for table in TOUCHED_TABLES} == before
    from django.contrib.contenttypes.models import ContentType

    from datasets.models import Dataset, DatasetUpload
    from serving.models import ModelVersion
    from tenants.models import AuditEvent, Tenant
    from training.models import TrainingJob
    from usage.models import UsageRecord

    tenant = Tenant.objects.get(pk=ids["tenant"])
    dataset = Dataset.objects.for_tenant(tenant).get(pk=ids["dataset"])
    assert (dataset.name, dataset.version, dataset.size_bytes) == ("clicks", 1, 1234)
    second = Dataset.objects.get(pk=ids["second"])
    assert second.duplicate_of_id == dataset.pk and second.upload.pk == ids["upload"]
    assert DatasetUpload.objects.get(pk=ids["upload"]).s3_upload_id == "up-1"
    assert TrainingJob.objects.get(pk=ids["job"]).dataset == dataset
    assert ModelVersion.objects.get(pk=ids["version"]).dataset == dataset
    assert UsageRecord.objects.for_tenant(tenant).get(pk=ids["usage"]).quantity == Decimal("12.5")
    # Actors written in the older formats read in the one format ``tenants.audit.Actor`` writes.
    labels = set(AuditEvent.objects.for_tenant(tenant).values_list("actor_kind", "actor_label"))
    assert labels == {("api_key", "api_key:abc123"), ("user", "user:ana@example.com"), ("operator", "operator:o@x.io")}
    moved = {(ct.app_label, ct.model) for ct in ContentType.objects.filter(model__in=["dataset", "usagerecord"])}
    assert moved == {("datasets", "dataset"), ("usage", "usagerecord")}
    assert not ContentType.objects.filter(app_label="training", model__startswith="dataset").exists()
    assert uuid.UUID(str(ids["dataset"]))
