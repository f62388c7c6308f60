"""Reads of the model registry, always inside one tenant."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from serving.models import ModelAlias, ModelVersion, RegisteredModel
from tenants.models import Tenant


def models_of(*, tenant: Tenant) -> QuerySet[RegisteredModel]:
    return RegisteredModel.objects.for_tenant(tenant).prefetch_related(
        Prefetch("aliases", queryset=ModelAlias.objects.select_related("version"))
    )


def visible_versions(*, tenant: Tenant, model_name: str) -> QuerySet[ModelVersion]:
    """Published versions (ready or archived); versions still publishing are never shown."""
    return (
        ModelVersion.objects.for_tenant(tenant)
        .filter(model__name=model_name)
        .exclude(status=ModelVersion.Status.PUBLISHING)
        .select_related("model", "job")
    )


def latest_version(*, model: RegisteredModel) -> ModelVersion | None:
    return model.versions.filter(status=ModelVersion.Status.READY).order_by("-version").first()
