"""Admin bases: rows the platform writes and operators only inspect, and writes that go through services.

The admin is a third front door beside the API and the dashboard, so it
writes only through the same services (validation, rules such as "a tenant
keeps an owner" or "a dataset in use stays", S3 clean-up, the audit row with
``operator:<email>`` as actor, set by ``tenants.middleware``). A service's
refusal is an error message on the page, and nothing of that request is
kept (one transaction), never a 500.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db import transaction
from django.http import HttpResponseRedirect
from django.urls import reverse


def _service_error() -> type[Exception]:
    # Imported late: core.errors imports DRF, whose settings import the API's authentication, which imports
    # core.errors; this module is the first the admin's autodiscovery loads, before any of those.
    from core.errors import ServiceError

    return ServiceError


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
    """Records (usage, reports, the audit log): viewed only, with no actions that change them.

    Billing records set ``deletable = False`` too: what a tenant used is not the admin's to erase.
    """

    def has_change_permission(self, request, obj=None):
        return False


class ServiceWriteAdmin(admin.ModelAdmin):
    """Deletes (one, or "delete selected") go through :meth:`delete_model`, which subclasses point at a service.

    Every write view runs in one transaction; a :class:`ServiceError` rolls it back (audit rows, log entries
    and the rows of a bulk delete alike) and comes back as an error message on the page it was sent from.
    (``ServiceError`` is ``core.errors.ServiceError``.)
    """

    def delete_model(self, request, obj) -> None:
        raise NotImplementedError(f"{type(self).__name__} must delete through a service")

    def delete_queryset(self, request, queryset) -> None:
        with transaction.atomic():  # all or nothing: one refusal keeps every selected row
            for obj in queryset:
                self.delete_model(request, obj)

    def _refused(self, request, error, url: str) -> HttpResponseRedirect:
        self.message_user(request, f"Nothing was changed: {error.message}", messages.ERROR)
        return HttpResponseRedirect(url)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except _service_error() as error:
            return self._refused(request, error, request.get_full_path())

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except _service_error() as error:
            opts = self.model._meta
            return self._refused(
                request, error, reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[object_id])
            )

    def changelist_view(self, request, extra_context=None):
        if request.method != "POST":  # actions (and list edits) are POSTs
            return super().changelist_view(request, extra_context)
        try:
            with transaction.atomic():
                return super().changelist_view(request, extra_context)
        except _service_error() as error:
            return self._refused(request, error, request.get_full_path())


class PlatformWrittenServiceAdmin(ServiceWriteAdmin, PlatformWrittenAdmin):
    """Read-only rows whose delete (when allowed) goes through a service."""
