from django.contrib import admin

from core.admin import PlatformWrittenAdmin, RecordAdmin
from serving.models import ModelVersion, PredictionUsage, RegisteredModel, ServingProcess


@admin.register(RegisteredModel)
class RegisteredModelAdmin(PlatformWrittenAdmin):
    """Read-only: a model's name is in its versions' object keys and its tenant's routes, and deleting it
    would take its versions and aliases past the registry services (versions go one by one, through the API)."""

    deletable = False
    list_display = ["name", "tenant", "created_at"]
    list_filter = ["tenant"]
    search_fields = ["name", "tenant__slug"]


@admin.register(ModelVersion)
class ModelVersionAdmin(PlatformWrittenAdmin):
    """Published versions with their manifests (immutable: read-only here)."""

    deletable = False
    list_display = ["model", "version", "tenant", "status", "template", "size_bytes", "published_at"]
    list_filter = ["status", "template", "tenant"]
    search_fields = ["model__name", "tenant__slug", "object_prefix"]


@admin.register(PredictionUsage)
class PredictionUsageAdmin(RecordAdmin):
    """Metered predictions per tenant, model, version and hour (written by the serving process)."""

    deletable = False  # billing records

    list_display = ["period_start", "tenant", "model_name", "version", "requests", "predictions", "errors"]
    list_filter = ["tenant"]
    date_hierarchy = "period_start"


@admin.register(ServingProcess)
class ServingProcessAdmin(RecordAdmin):
    """Serving processes' own reports (the status page at /admin/status/ shows them with the workers)."""

    list_display = ["name", "heartbeat_at", "started_at", "cache_used_bytes", "cache_budget_bytes"]
