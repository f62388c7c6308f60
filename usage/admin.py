from django.contrib import admin

from core.admin import RecordAdmin
from usage.models import UsageRecord


@admin.register(UsageRecord)
class UsageRecordAdmin(RecordAdmin):
    """Daily usage per tenant, rebuilt by the hourly roll-up task (read-only here)."""

    deletable = False
    list_display = ["day", "tenant", "kind", "model_name", "version", "quantity"]
    list_filter = ["kind", "tenant"]
    date_hierarchy = "day"
