"""Reads of the model registry, always inside one tenant."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Prefetch, QuerySet

from serving.models import ModelAlias, ModelVersion, RegisteredModel, RegistryEvent
from tenants import keys as tenant_keys
from tenants import selectors as tenant_selectors
from tenants.models import ApiKey, Tenant


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


# --- Reads for the serving process (plain data, cached there for a few seconds) ---


@dataclass(frozen=True)
class KeyGrant:
    """What an API key lets the serving process do, read in one query."""

    key_id: str
    tenant_id: str
    tenant_slug: str
    tenant_active: bool
    scopes: frozenset[str]
    revoked: bool
    expired: bool
    predictions_per_minute: int


def version_before_last_move(*, model: RegisteredModel, alias: str) -> int | None:
    """The version ``alias`` pointed at before its last move (the registry's history), where a rollback goes."""
    last_move = (
        RegistryEvent.objects.filter(model=model, action="alias_set", details__alias=alias)
        .order_by("-created_at", "-id")
        .first()
    )
    return last_move.details.get("previous") if last_move else None


def key_grant(*, key: ApiKey) -> KeyGrant:
    """The grant of a key from ``tenants.services.use_api_key``: its rights now, not its stored role and scopes.

    A key whose creator left the tenant or whose parent key was revoked is refused like a revoked key.
    """
    rights = getattr(key, "rights", None) or tenant_selectors.key_rights(key=key)
    return KeyGrant(
        key_id=str(key.pk),
        tenant_id=str(key.tenant_id),
        tenant_slug=key.tenant.slug,
        tenant_active=key.tenant.is_active,
        scopes=rights.scopes,
        revoked=not rights.usable and rights.refusal != tenant_keys.EXPIRED,
        expired=rights.refusal == tenant_keys.EXPIRED,
        predictions_per_minute=key.tenant.plan.predictions_per_minute,
    )


@dataclass(frozen=True)
class VersionRoute:
    id: str
    version: int
    status: str
    object_prefix: str


@dataclass(frozen=True)
class ModelRoutes:
    """One model's versions, aliases and traffic split: everything needed to pick a version."""

    model_name: str
    versions: dict[int, VersionRoute]
    aliases: dict[str, int]
    traffic: dict[int, int]

    def ready_versions(self) -> list[int]:
        return [v for v, row in self.versions.items() if row.status == ModelVersion.Status.READY]

    @property
    def latest(self) -> int | None:
        ready = self.ready_versions()
        return max(ready) if ready else None

    def default_weights(self) -> dict[int, int]:
        """Where a request that names no version goes, as version -> weight: the traffic split when there is one,
        else the ``production`` alias's version, else the latest ready version (empty: none is published yet).

        The one statement of the routing default: the serving router draws from it, and the cache keeps warm
        what it and the aliases can reach.
        """
        if self.traffic:
            return dict(self.traffic)
        if ModelAlias.DEFAULT in self.aliases:
            return {self.aliases[ModelAlias.DEFAULT]: 100}
        return {self.latest: 100} if self.latest is not None else {}

    def referenced(self) -> set[int]:
        """Versions that a request without a version number can reach, or that an alias names."""
        return set(self.default_weights()) | set(self.aliases.values())


def model_routes(*, tenant_id: str, model_name: str) -> ModelRoutes | None:
    model = RegisteredModel.objects.for_tenant(tenant_id).filter(name=model_name).first()
    if model is None:
        return None
    versions = {
        row["version"]: VersionRoute(id=str(row["id"]), **{k: row[k] for k in ("version", "status", "object_prefix")})
        for row in model.versions.values("id", "version", "status", "object_prefix")
    }
    aliases = dict(model.aliases.values_list("name", "version__version"))
    return ModelRoutes(
        model_name=model.name,
        versions=versions,
        aliases=aliases,
        traffic={int(v): int(w) for v, w in (model.traffic or {}).items()},
    )


def version_manifest(*, tenant_id: str, version_id: str) -> dict | None:
    return (
        ModelVersion.objects.for_tenant(tenant_id)
        .filter(pk=version_id, status=ModelVersion.Status.READY)
        .values_list("manifest", flat=True)
        .first()
    )


def suspended_tenant_ids() -> set[str]:
    """Tenants refused everywhere; the serving process polls this twice a second (a small indexed read)."""
    return {str(pk) for pk in Tenant.objects.filter(status=Tenant.Status.SUSPENDED).values_list("pk", flat=True)}
