"""Test data built through the real services.

``OBJECT_FACTORIES`` maps every tenant-owned model to a function making one
row for a tenant. The isolation harness uses it to create tenant A's object
for each API route, and fails for a model that has no entry, so a new
endpoint cannot slip past it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from django.db import models

from datasets.models import Dataset, DatasetUpload
from events.models import WebhookDelivery, WebhookEndpoint
from serving.models import ModelVersion, PredictionUsage, RegisteredModel
from tenants import audit, services
from tenants.models import ApiKey, AuditEvent, Membership, Role, Tenant, TenantPlanPeriod, User
from training.models import TrainingJob
from usage.models import UsageRecord

_counter = itertools.count(1)


@dataclass
class TenantWithKey:
    tenant: Tenant
    owner: User
    raw_key: str
    api_key: ApiKey


def make_tenant(name: str = "Tenant") -> TenantWithKey:
    n = next(_counter)
    tenant, created = services.create_tenant(name=f"{name} {n}", owner_email=f"owner{n}-{name.split()[-1]}@example.com")
    owner = Membership.objects.get(tenant=tenant, role=Role.OWNER).user
    return TenantWithKey(tenant=tenant, owner=owner, raw_key=created.raw_key, api_key=created.api_key)


def put_on_plan(tenant: Tenant, plan) -> None:
    """The tenant on ``plan`` for its whole history (billing reads the plan each day had)."""
    tenant.plan = plan
    tenant.save(update_fields=["plan"])
    TenantPlanPeriod.objects.filter(tenant=tenant).delete()
    TenantPlanPeriod.objects.create(tenant=tenant, plan=plan, effective_from=date(1970, 1, 1))


def make_key(tenant: Tenant, *, scopes=("read", "write", "predict"), role=Role.OWNER, **extra) -> services.CreatedKey:
    return services.create_api_key(
        tenant=tenant, name="test key", scopes=list(scopes), role=role, acting_role=Role.OWNER, **extra
    )


def make_member(tenant: Tenant, *, role: str = Role.MEMBER, email: str | None = None) -> Membership:
    email = email or f"person{next(_counter)}@example.com"
    return services.add_member(tenant=tenant, email=email, role=role, acting_role=Role.OWNER)


SMALL_CSV = b"text,label\nhello world,pos\nawful day,neg\n"


def make_dataset(tenant: Tenant, *, content: bytes = SMALL_CSV, name: str = "reviews", **extra):
    import hashlib
    import io

    from datasets import services as dataset_services

    return dataset_services.create_dataset(
        tenant=tenant,
        staged=io.BytesIO(content),
        staged_sha256=hashlib.sha256(content).hexdigest(),
        staged_size=len(content),
        name=name,
        filename="data.csv",
        **extra,
    )


def make_upload(tenant: Tenant):
    from datasets import services as dataset_services

    upload, _ = dataset_services.start_multipart_upload(tenant=tenant, name="big", size=1024, filename="big.csv")
    return upload


CTR_CSV = b"item_sequence,clicked\n" + b"".join(b"%d %d %d,%d\n" % (i, i + 1, i + 2, i % 2) for i in range(40))


def make_job(tenant: Tenant):
    from datasets import services as dataset_services
    from training import services as job_services

    dataset = make_dataset(tenant, content=CTR_CSV, name="clicks", label_column="clicked")
    dataset_services.validate_dataset(dataset_id=dataset.id)
    return job_services.create_job(
        tenant=tenant,
        dataset_id=dataset.id,
        template="sequence_ctr",
        model_name="ctr",
        label_column="clicked",
        params={"epochs": 1},
    )


def make_model_version(tenant: Tenant, *, name: str | None = None, version: int = 1):
    from serving.models import ModelVersion, RegisteredModel

    model, _ = RegisteredModel.objects.get_or_create(tenant=tenant, name=name or f"model-{next(_counter)}")
    return ModelVersion.objects.create(
        tenant=tenant,
        model=model,
        version=version,
        status="ready",
        template="sequence_ctr",
        object_prefix=f"tenants/{tenant.id}/models/{model.name}/{version}/",
        metrics={"auc": 0.9},
    )


def make_prediction_usage(tenant: Tenant):
    from django.utils import timezone

    from serving.models import PredictionUsage

    version = make_model_version(tenant)
    return PredictionUsage.objects.create(
        tenant=tenant,
        model_name=version.model.name,
        version=version.version,
        period_start=timezone.now().replace(minute=0, second=0, microsecond=0),
        requests=3,
        predictions=5,
    )


def make_webhook(tenant: Tenant):
    from events import services as event_services

    created = event_services.create_endpoint(
        tenant=tenant, url="http://127.0.0.1:9/hook", event_types=["job.finished", "model.alias_moved"]
    )
    return created.endpoint


def make_webhook_delivery(tenant: Tenant):
    """A finished delivery (a redelivery of a pending one is refused with 409, not the route's own 2xx)."""
    from events import services as event_services

    endpoint = WebhookEndpoint.objects.for_tenant(tenant).first() or make_webhook(tenant)
    delivery = event_services.ping(tenant=tenant, endpoint_id=endpoint.pk)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status=WebhookDelivery.Status.FAILED)
    delivery.refresh_from_db()
    return delivery


OBJECT_FACTORIES: dict[type[models.Model], Callable[[Tenant], models.Model]] = {
    Membership: lambda tenant: make_member(tenant),
    ApiKey: lambda tenant: make_key(tenant, role=Role.MEMBER).api_key,
    Dataset: make_dataset,
    DatasetUpload: make_upload,
    TrainingJob: make_job,
    RegisteredModel: lambda tenant: make_model_version(tenant).model,
    ModelVersion: make_model_version,
    PredictionUsage: make_prediction_usage,
    AuditEvent: lambda tenant: audit.record(tenant=tenant, action="test.change", target=tenant),
    WebhookEndpoint: make_webhook,
    WebhookDelivery: make_webhook_delivery,
    UsageRecord: lambda tenant: UsageRecord.objects.create(
        tenant=tenant, day=date.today(), kind=UsageRecord.Kind.PREDICTIONS, model_name="m", version=1, quantity=5
    ),
}
