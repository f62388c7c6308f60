"""Admin bases for rows the platform writes and operators only inspect."""

from __future__ import annotations

from django.contrib import admin

# The admin's front page links the operators' own pages (status, usage and cost).
admin.site.index_template = "admin/platform_index.html"
admin.site.site_header = "ML platform operations"


class PlatformWrittenAdmin(admin.ModelAdmin):
    """Rows come in through the platform (the API, workers, the serving process), never the admin form.

    Every field is read-only and there is no add; ``deletable = False``
    also removes delete. Change stays allowed so admin actions (cancel,
    retry, revoke) still run on the rows.
    """

    deletable = True

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return self.deletable and super().has_delete_permission(request, obj)


class RecordAdmin(PlatformWrittenAdmin):
    """Records (usage, reports, the audit log): viewed only, with no actions that change them."""

    def has_change_permission(self, request, obj=None):
        return False
