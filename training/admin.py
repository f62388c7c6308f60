"""Operators' view of datasets, uploads and jobs (read-mostly: datasets are immutable).

Deletes, one row or "delete selected", go through the same services as the API's: the objects in S3 are
removed, a dataset a queued or running job reads is refused, and each delete is audited with the operator
as actor.
"""

from django.contrib import admin

from core.admin import PlatformWrittenServiceAdmin
from core.errors import ConflictError
from training import job_services, services
from training.models import Dataset, DatasetUpload, TrainingJob


@admin.register(Dataset)
class DatasetAdmin(PlatformWrittenServiceAdmin):
    list_display = ["name", "version", "tenant", "status", "format", "size_bytes", "row_count", "created_at"]
    list_filter = ["status", "format", "tenant"]
    search_fields = ["name", "id", "sha256", "tenant__slug"]
    date_hierarchy = "created_at"

    def delete_model(self, request, obj):
        services.delete_dataset(tenant=obj.tenant, dataset_id=obj.pk)


@admin.register(DatasetUpload)
class DatasetUploadAdmin(PlatformWrittenServiceAdmin):
    list_display = ["id", "tenant", "status", "declared_size", "created_at", "expires_at"]
    list_filter = ["status", "tenant"]

    def delete_model(self, request, obj):
        """A pending upload is aborted (its parts and its dataset row go); a finished one is its dataset's record."""
        if obj.status != DatasetUpload.Status.PENDING:
            raise ConflictError(f"This upload is {obj.status}; delete its dataset instead.", code="upload_not_pending")
        services.abort_upload(upload=obj)


@admin.register(TrainingJob)
class TrainingJobAdmin(PlatformWrittenServiceAdmin):
    """Operators see everything, including the full failure traceback tenants never get."""

    list_display = ["id", "tenant", "template", "model_name", "status", "attempts", "device", "created_at"]
    list_filter = ["status", "template", "tenant", "device", "created_at"]
    search_fields = ["id", "model_name", "tenant__slug"]
    date_hierarchy = "created_at"
    actions = ["cancel", "retry"]

    def delete_model(self, request, obj):
        job_services.delete_job(tenant=obj.tenant, job_id=obj.pk)

    @admin.action(description="Cancel the selected jobs")
    def cancel(self, request, queryset):
        from core.errors import ServiceError

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
        count = job_services.retry_jobs(job_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"Requeued {count} job(s).")
