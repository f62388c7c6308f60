"""Operators' view of datasets and uploads (read-mostly: datasets are immutable).

Deletes, one row or "delete selected", go through the same services as the API's: the objects in S3 are
removed, a dataset a queued or running job reads is refused, and each delete is audited with the operator
as actor.
"""

from django.contrib import admin

from core.admin import PlatformWrittenServiceAdmin
from core.errors import ConflictError
from datasets import services
from datasets.models import Dataset, DatasetUpload


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
