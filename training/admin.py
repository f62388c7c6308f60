"""Operators' view of datasets and uploads (read-mostly: datasets are immutable)."""

from django.contrib import admin

from core.admin import PlatformWrittenAdmin
from training.models import Dataset, DatasetUpload, TrainingJob


@admin.register(Dataset)
class DatasetAdmin(PlatformWrittenAdmin):
    list_display = ["name", "version", "tenant", "status", "format", "size_bytes", "row_count", "created_at"]
    list_filter = ["status", "format", "tenant"]
    search_fields = ["name", "id", "sha256", "tenant__slug"]
    date_hierarchy = "created_at"


@admin.register(DatasetUpload)
class DatasetUploadAdmin(PlatformWrittenAdmin):
    list_display = ["id", "tenant", "status", "declared_size", "created_at", "expires_at"]
    list_filter = ["status", "tenant"]


@admin.register(TrainingJob)
class TrainingJobAdmin(PlatformWrittenAdmin):
    """Operators see everything, including the full failure traceback tenants never get."""

    list_display = ["id", "tenant", "template", "model_name", "status", "attempts", "device", "created_at"]
    list_filter = ["status", "template", "tenant", "device", "created_at"]
    search_fields = ["id", "model_name", "tenant__slug"]
    date_hierarchy = "created_at"
    actions = ["cancel", "retry"]

    @admin.action(description="Cancel the selected jobs")
    def cancel(self, request, queryset):
        from core.errors import ServiceError
        from training import job_services

        done = 0
        for job in queryset.select_related("tenant"):
            try:
                job_services.cancel_job(tenant=job.tenant, job_id=job.pk)
                done += 1
            except ServiceError:
                continue
        self.message_user(request, f"Cancelled {done} job(s).")

    @admin.action(description="Retry the selected failed or cancelled jobs (resumes from the last checkpoint)")
    def retry(self, request, queryset):
        from training import job_services

        count = job_services.retry_jobs(job_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"Requeued {count} job(s).")
