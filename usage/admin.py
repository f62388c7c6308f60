from django.contrib import admin

from core.admin import RecordAdmin
from usage.models import UsageRecord

# The admin's front page links the operators' own pages, which live here (status, usage and cost).
admin.site.index_template = "admin/platform_index.html"


@admin.register(UsageRecord)
class UsageRecordAdmin(RecordAdmin):
    """Daily usage per tenant, rebuilt by the hourly roll-up task (read-only here)."""

    deletable = False
    list_display = ["day", "tenant", "kind", "model_name", "version", "quantity"]
    list_filter = ["kind", "tenant"]
    date_hierarchy = "day"
