"""Writes to the model registry: alias moves, traffic splits, archiving and deleting versions.

Each change is one transaction with the model row locked, and leaves a
``RegistryEvent`` saying who did what, so promotions and rollbacks are atomic
and audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core import storage
from core.errors import ConflictError, NotFoundError, ServiceError
from events import services as events
from serving import selectors
from serving.models import ModelAlias, ModelVersion, PredictionUsage, RegisteredModel, RegistryEvent, ServingProcess
from tenants import audit
from tenants.models import Tenant


def _locked_model(tenant: Tenant, name: str) -> RegisteredModel:
    model = RegisteredModel.objects.for_tenant(tenant).select_for_update().filter(name=name).first()
    if model is None:
        raise NotFoundError("No such model.")
    return model


def _ready_version(model: RegisteredModel, version: int) -> ModelVersion:
    found = model.versions.filter(version=version).first()
    if found is None or found.status == ModelVersion.Status.PUBLISHING:
        raise NotFoundError(f"{model.name} has no version {version}.", details={"version": version})
    if found.status != ModelVersion.Status.READY:
        raise ConflictError(f"Version {version} is {found.status}.", code="version_not_ready")
    return found


def _event(model: RegisteredModel, action: str, **details) -> None:
    """The registry's own history and the platform's audit log, in the caller's transaction, by the same actor."""
    actor = audit.current_actor().label
    RegistryEvent.objects.create(tenant_id=model.tenant_id, model=model, action=action, actor=actor, details=details)
    audit.record(
        tenant=model.tenant_id, action=f"model.{action}", target=model, details={"model": model.name, **details}
    )


@transaction.atomic
def set_alias(*, tenant: Tenant, model_name: str, alias: str, version: int) -> ModelAlias:
    model = _locked_model(tenant, model_name)
    return _move_alias(model, alias, _ready_version(model, version))


def _move_alias(model: RegisteredModel, alias: str, target: ModelVersion, **details) -> ModelAlias:
    existing = ModelAlias.objects.filter(model=model, name=alias).select_related("version").first()
    previous = existing.version.version if existing else None
    if existing is None:
        existing = ModelAlias.objects.create(tenant_id=model.tenant_id, model=model, name=alias, version=target)
    else:
        existing.version, existing.updated_at = target, timezone.now()
        existing.save(update_fields=["version", "updated_at"])
    _event(model, "alias_set", alias=alias, version=target.version, previous=previous, **details)
    _alias_moved(model, alias, version=target.version, previous=previous, action="rollback" if details else "set")
    return existing


def _alias_moved(model: RegisteredModel, alias: str, *, version: int | None, previous: int | None, action: str) -> None:
    """``model.alias_moved`` to the tenant's webhooks, in the move's transaction (``version`` None: deleted)."""
    events.emit(
        tenant=model.tenant_id,
        event_type="model.alias_moved",
        data={"model": model.name, "alias": alias, "version": version, "previous": previous, "action": action},
    )


@transaction.atomic
def rollback_alias(*, tenant: Tenant, model_name: str, alias: str) -> ModelAlias:
    """Move ``alias`` back to the version it pointed at before its last move (like ``cd -``: twice returns).

    The registry's own history says where it was; a version archived or deleted since is refused, not skipped,
    so a rollback never lands somewhere the tenant did not expect.
    """
    model = _locked_model(tenant, model_name)
    if not ModelAlias.objects.filter(model=model, name=alias).exists():
        raise NotFoundError(f"{model_name} has no alias {alias!r}.")
    previous = selectors.version_before_last_move(model=model, alias=alias)
    if previous is None:
        raise ConflictError(f"{alias} has no earlier version to roll back to.", code="no_previous_version")
    target = model.versions.filter(version=previous, status=ModelVersion.Status.READY).first()
    if target is None:
        raise ConflictError(
            f"{alias} pointed at version {previous} before, which is no longer ready.",
            code="version_not_ready",
            details={"version": previous},
        )
    return _move_alias(model, alias, target, rollback=True)


@transaction.atomic
def delete_alias(*, tenant: Tenant, model_name: str, alias: str) -> None:
    model = _locked_model(tenant, model_name)
    existing = ModelAlias.objects.filter(model=model, name=alias).select_related("version").first()
    if existing is None:
        raise NotFoundError(f"{model_name} has no alias {alias!r}.")
    existing.delete()
    _event(model, "alias_deleted", alias=alias, previous=existing.version.version)
    _alias_moved(model, alias, version=None, previous=existing.version.version, action="deleted")


@transaction.atomic
def set_traffic(*, tenant: Tenant, model_name: str, weights: dict[str, int]) -> RegisteredModel:
    """Weights per version summing to 100; an empty mapping removes the split."""
    model = _locked_model(tenant, model_name)
    cleaned: dict[str, int] = {}
    for key, weight in weights.items():
        key = str(key)
        valid_key = key.isascii() and key.isdigit() and len(key) <= 9
        if not valid_key or not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
            raise ServiceError("Weights map version numbers to whole percentages.", code="invalid_traffic")
        _ready_version(model, int(key))
        if weight:
            cleaned[str(int(key))] = weight
    if cleaned and sum(cleaned.values()) != 100:
        raise ServiceError(
            "Traffic weights must sum to 100.", code="invalid_traffic", details={"sum": sum(cleaned.values())}
        )
    previous = model.traffic
    model.traffic = cleaned
    model.save(update_fields=["traffic"])
    _event(model, "traffic_set", weights=cleaned, previous=previous)
    events.emit(
        tenant=model.tenant_id,
        event_type="model.traffic_changed",
        data={"model": model.name, "weights": cleaned, "previous": previous},
    )
    return model


def _require_unreferenced(model: RegisteredModel, version: ModelVersion, action: str) -> None:
    aliases = sorted(version.aliases.values_list("name", flat=True))
    if aliases:
        raise ConflictError(
            f"Cannot {action} version {version.version}: aliases {', '.join(aliases)} point to it.",
            code="version_in_use",
            details={"aliases": aliases},
        )
    if str(version.version) in (model.traffic or {}):
        raise ConflictError(
            f"Cannot {action} version {version.version}: the traffic split sends requests to it.", code="version_in_use"
        )


@transaction.atomic
def archive_version(*, tenant: Tenant, model_name: str, version: int) -> ModelVersion:
    model = _locked_model(tenant, model_name)
    target = _ready_version(model, version)
    _require_unreferenced(model, target, "archive")
    target.status = ModelVersion.Status.ARCHIVED
    target.save(update_fields=["status"])
    _event(model, "version_archived", version=version)
    return target


def delete_version(*, tenant: Tenant, model_name: str, version: int) -> None:
    """Remove a version's row, then its files once that is committed."""
    with transaction.atomic():
        model = _locked_model(tenant, model_name)
        target = model.versions.filter(version=version).exclude(status=ModelVersion.Status.PUBLISHING).first()
        if target is None:
            raise NotFoundError(f"{model_name} has no version {version}.")
        _require_unreferenced(model, target, "delete")
        prefix = target.object_prefix
        target.delete()
        _event(model, "version_deleted", version=version)
        transaction.on_commit(lambda: storage.delete_prefix(prefix))


# --- Metering (written by the serving process) ------------------------------


@dataclass(frozen=True)
class UsageKey:
    tenant_id: str
    model_name: str
    version: int
    period_start: datetime  # the hour, UTC


def record_prediction_usage(*, counts: dict[UsageKey, tuple[int, ...]]) -> None:
    """Add (requests, predictions, errors[, explanations]) per tenant, model, version and hour; one transaction.

    Explanations are counted apart from predictions (an explanation costs about 50 predictions' compute and is
    billed at its own price); a request counts once whichever it asked for.
    """
    with transaction.atomic():
        for key, values in counts.items():
            requests, predictions, errors, explanations = (*values, 0)[:4]
            usage, _ = PredictionUsage.objects.for_tenant(key.tenant_id).get_or_create(
                tenant_id=key.tenant_id, model_name=key.model_name, version=key.version, period_start=key.period_start
            )
            PredictionUsage.objects.filter(pk=usage.pk).update(
                requests=F("requests") + requests,
                predictions=F("predictions") + predictions,
                errors=F("errors") + errors,
                explanations=F("explanations") + explanations,
            )
            ModelVersion.objects.for_tenant(key.tenant_id).filter(
                model__name=key.model_name, version=key.version
            ).update(request_count=F("request_count") + requests, error_count=F("error_count") + errors)


def report_serving_process(
    *, name: str, started_at: datetime, used_bytes: int, budget_bytes: int, loaded: list[dict]
) -> None:
    ServingProcess.objects.update_or_create(
        name=name,
        defaults={
            "started_at": started_at,
            "heartbeat_at": timezone.now(),
            "cache_used_bytes": used_bytes,
            "cache_budget_bytes": budget_bytes,
            "loaded": loaded,
        },
    )


def forget_serving_process(*, name: str) -> None:
    ServingProcess.objects.filter(name=name).delete()
