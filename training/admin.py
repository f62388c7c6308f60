"""Operators' view of training jobs: deletes, cancels and retries go through the same services as the API's,
audited with the operator as actor."""

from django.contrib import admin, messages

from core.admin import PlatformWrittenServiceAdmin
from core.errors import ServiceError
from training import services
from training.models import TrainingJob


@admin.register(TrainingJob)
class TrainingJobAdmin(PlatformWrittenServiceAdmin):
    """Operators see everything, including the full failure traceback tenants never get."""

    list_display = ["id", "tenant", "template", "model_name", "status", "attempts", "device", "created_at"]
    list_filter = ["status", "template", "tenant", "device", "created_at"]
    search_fields = ["id", "model_name", "tenant__slug"]
    date_hierarchy = "created_at"
    actions = ["cancel", "retry"]

    def delete_model(self, request, obj):
        services.delete_job(tenant=obj.tenant, job_id=obj.pk)

    @admin.action(description="Cancel the selected jobs")
    def cancel(self, request, queryset):
        done = 0
        for job in queryset.select_related("tenant"):
            try:
                services.cancel_job(tenant=job.tenant, job_id=job.pk)
                done += 1
            except ServiceError:
                continue
        self.message_user(request, f"Cancelled {done} job(s).")

    @admin.action(description="Retry the selected failed or cancelled jobs (resumes from the last checkpoint)")
    def retry(self, request, queryset):
        retried = services.retry_jobs(job_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"Requeued {retried.requeued} job(s).")
        for job_id, reason in retried.refused.items():
            self.message_user(request, f"Job {job_id} was not requeued: {reason}", messages.WARNING)
