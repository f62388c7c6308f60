"""Operators' console for tenants, plans, people and keys."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from core.admin import RecordAdmin
from tenants import services
from tenants.models import ApiKey, AuditEvent, Membership, Plan, Role, Scope, Tenant, UsageRecord, User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    ordering = ["email"]
    list_display = ["email", "is_staff", "is_active", "date_joined"]
    search_fields = ["email", "first_name", "last_name"]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Personal info", {"fields": ("first_name", "last_name")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = [
        "slug",
        "name",
        "max_concurrent_jobs",
        "compute_seconds_per_month",
        "storage_bytes",
        "max_dataset_bytes",
        "predictions_per_minute",
        "monthly_base_fee",
        "price_gpu_hour",
        "price_cpu_hour",
        "price_gb_month",
        "price_per_1k_predictions",
    ]
    search_fields = ["slug", "name"]


@admin.register(UsageRecord)
class UsageRecordAdmin(RecordAdmin):
    """Daily usage per tenant, rebuilt by the hourly roll-up task (read-only here)."""

    list_display = ["day", "tenant", "kind", "model_name", "version", "quantity"]
    list_filter = ["kind", "tenant"]
    date_hierarchy = "day"


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]
    fields = ["user", "role", "created_at"]
    readonly_fields = ["created_at"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "status", "plan", "created_at"]
    list_filter = ["status", "plan"]
    search_fields = ["slug", "name", "id"]
    readonly_fields = ["id", "created_at"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]
    actions = ["suspend", "reactivate"]

    @admin.action(description="Suspend the selected tenants (API, dashboard and serving refuse them)")
    def suspend(self, request, queryset):
        for tenant in queryset:
            services.set_tenant_status(tenant=tenant, status=Tenant.Status.SUSPENDED)
        self.message_user(request, f"Suspended {queryset.count()} tenant(s).")

    @admin.action(description="Reactivate the selected tenants")
    def reactivate(self, request, queryset):
        for tenant in queryset:
            services.set_tenant_status(tenant=tenant, status=Tenant.Status.ACTIVE)
        self.message_user(request, f"Reactivated {queryset.count()} tenant(s).")


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["role", "tenant"]
    search_fields = ["user__email", "tenant__slug"]
    autocomplete_fields = ["user", "tenant"]


class ApiKeyCreateForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=Scope.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = ApiKey
        fields = ["tenant", "name", "scopes", "role", "expires_at"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "prefix",
        "name",
        "tenant",
        "role",
        "scopes",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
    ]
    list_filter = ["role", "tenant", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["prefix", "name", "tenant__slug"]
    readonly_fields = ["id", "prefix", "scopes", "role", "tenant", "created_by", "created_at", "last_used_at"]
    exclude = ["key_hash"]
    actions = ["revoke"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj else []

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        created = services.create_api_key(
            tenant=form.cleaned_data["tenant"],
            name=form.cleaned_data["name"],
            scopes=form.cleaned_data["scopes"],
            role=form.cleaned_data["role"],
            acting_role=Role.OWNER,
            expires_at=form.cleaned_data["expires_at"],
        )
        # The admin keeps using ``obj`` for its log and redirect: make it the saved row.
        obj.pk = created.api_key.pk
        obj._state.adding = False
        obj.refresh_from_db()
        self.message_user(
            request, f"API key created. Copy it now, it is not shown again: {created.raw_key}", messages.WARNING
        )

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset):
        for key in queryset:
            services.revoke_api_key(tenant=key.tenant, key_id=key.pk)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")


@admin.register(AuditEvent)
class AuditEventAdmin(RecordAdmin):
    """The audit log, read-only: no add, change or delete for anyone, superusers included."""

    deletable = False
    list_display = ["created_at", "tenant", "actor_label", "action", "target_type", "target_id", "request_id"]
    list_filter = ["action", "actor_kind", "tenant"]
    search_fields = ["action", "target_id", "actor_label", "request_id", "tenant__slug"]
    date_hierarchy = "created_at"
