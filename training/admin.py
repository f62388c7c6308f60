"""Operators' view of datasets and uploads (read-mostly: datasets are immutable)."""

from django.contrib import admin

from training.models import Dataset, DatasetUpload


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "version", "tenant", "status", "format", "size_bytes", "row_count", "created_at"]
    list_filter = ["status", "format", "tenant"]
    search_fields = ["name", "id", "sha256", "tenant__slug"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Dataset._meta.fields]

    def has_add_permission(self, request):
        return False  # datasets come in through the API, validated


@admin.register(DatasetUpload)
class DatasetUploadAdmin(admin.ModelAdmin):
    list_display = ["id", "tenant", "status", "declared_size", "created_at", "expires_at"]
    list_filter = ["status", "tenant"]
    readonly_fields = [f.name for f in DatasetUpload._meta.fields]

    def has_add_permission(self, request):
        return False
