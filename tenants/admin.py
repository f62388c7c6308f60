"""Operators' console for tenants, plans, people and keys: every change goes through ``tenants.services``.

So an operator's change is validated and audited like the same change through the API (actor
``operator:<email>``), and a refusal (the last owner, a duplicate member) is an error message, not a 500.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from core.admin import RecordAdmin, ServiceWriteAdmin
from tenants import services
from tenants.models import ApiKey, AuditEvent, Membership, Plan, PlanPrice, Role, Scope, Tenant, User


@admin.register(User)
class UserAdmin(ServiceWriteAdmin, DjangoUserAdmin):
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

    def save_model(self, request, obj, form, change):
        """Activation goes through ``set_user_active`` (audited in each of the person's tenants)."""
        if change and "is_active" in form.changed_data:
            active = obj.is_active
            obj.is_active = not active
            super().save_model(request, obj, form, change)
            services.set_user_active(user=obj, active=active)
        else:
            super().save_model(request, obj, form, change)

    def delete_model(self, request, obj):
        """Leave every tenant through ``remove_member`` first (audited; refused for a tenant's last owner)."""
        for membership in Membership.objects.filter(user=obj).select_related("tenant"):
            services.remove_member(tenant=membership.tenant, membership_id=membership.pk, acting_role=Role.OWNER)
        obj.delete()


class PlanPriceInline(admin.TabularInline):
    """The plan's price history: appended by the plan form's price fields, never edited."""

    model = PlanPrice
    extra = 0
    can_delete = False
    ordering = ["-effective_from"]
    fields = ["effective_from", *services.PRICE_FIELDS, "created_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class PlanForm(forms.ModelForm):
    prices_effective_from = forms.DateField(
        required=False,
        help_text="When changed prices take effect: today (empty) or a later day. Past days keep their prices.",
    )

    class Meta:
        model = Plan
        fields = [*services.PLAN_FIELDS, *services.PRICE_FIELDS]


@admin.register(Plan)
class PlanAdmin(ServiceWriteAdmin):
    """Plans through ``tenants.services``: limits with ``update_plan``, prices with ``set_plan_prices`` (history)."""

    form = PlanForm
    inlines = [PlanPriceInline]
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
        "price_per_1k_explanations",
    ]
    search_fields = ["slug", "name"]

    def has_delete_permission(self, request, obj=None):
        return False  # tenants' bills name their plan and its price history

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if not change:
            created = services.create_plan(
                prices={name: data[name] for name in services.PRICE_FIELDS},
                **{name: data[name] for name in services.PLAN_FIELDS},
            )
            _become(obj, created)
            return
        plan = Plan.objects.get(pk=obj.pk)
        limits = {name: data[name] for name in services.PLAN_FIELDS if name in form.changed_data}
        prices = {name: data[name] for name in services.PRICE_FIELDS if name in form.changed_data}
        if limits:
            services.update_plan(plan=plan, changes=limits)
        if prices:
            row = services.set_plan_prices(plan=plan, prices=prices, effective_from=data["prices_effective_from"])
            self.message_user(request, f"New prices in force from {row.effective_from:%Y-%m-%d}.", messages.INFO)
        _become(obj, plan)

    def save_related(self, request, form, formsets, change):
        for formset in formsets:  # the read-only price history: written by set_plan_prices only
            formset.save(commit=False)  # writes nothing; fills what the admin's change message reads


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]
    fields = ["user", "role", "created_at"]
    readonly_fields = ["created_at"]


def _become(obj, saved) -> None:
    """The admin keeps using the form's ``obj`` for its log and redirect: make it the row the service saved."""
    obj.pk = saved.pk
    obj._state.adding = False
    obj.refresh_from_db()


def _save_memberships(tenant: Tenant, formset) -> None:
    """The membership rows of a tenant's page, through the services: adds, then role changes, then removals.

    That order lets one save add a new owner and demote or remove the old one; the last-owner rule holds
    whatever the order of the rows. Operators act with an owner's rights.
    """
    from core.errors import ServiceError  # late: see core.admin._service_error

    formset.save(commit=False)  # fills new_objects, changed_objects and deleted_objects; writes nothing
    for membership in formset.new_objects:
        services.add_member(tenant=tenant, email=membership.user.email, role=membership.role, acting_role=Role.OWNER)
    for membership, changed in formset.changed_objects:
        if "user" in changed:
            raise ServiceError(
                "A membership cannot move to another person: remove it and add that person.", code="member_fixed"
            )
        if "role" in changed:
            services.change_member_role(
                tenant=tenant, membership_id=membership.pk, role=membership.role, acting_role=Role.OWNER
            )
    for membership in formset.deleted_objects:
        services.remove_member(tenant=tenant, membership_id=membership.pk, acting_role=Role.OWNER)


@admin.register(Tenant)
class TenantAdmin(ServiceWriteAdmin):
    """Tenants through ``tenants.services``: status, plan, name and members are audited; no delete (suspend)."""

    list_display = ["slug", "name", "status", "plan", "created_at"]
    list_filter = ["status", "plan"]
    search_fields = ["slug", "name", "id"]
    readonly_fields = ["id", "created_at"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]
    actions = ["suspend", "reactivate"]

    def get_readonly_fields(self, request, obj=None):
        # The slug is in keys' X-Tenant hints, serving pins and URLs: fixed once made.
        return [*self.readonly_fields, "slug"] if obj else self.readonly_fields

    def get_prepopulated_fields(self, request, obj=None):
        return {} if obj else self.prepopulated_fields

    def has_delete_permission(self, request, obj=None):
        return False  # suspend instead: a delete would take the audit log and usage with it

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if not change:
            tenant, _ = services.create_tenant(
                name=data["name"], slug=data["slug"], plan=data["plan"], owner_email=None
            )
            if data["status"] != Tenant.Status.ACTIVE:
                services.set_tenant_status(tenant=tenant, status=data["status"])
            _become(obj, tenant)
            return
        tenant = Tenant.objects.select_related("plan").get(pk=obj.pk)
        if "name" in form.changed_data:
            services.rename_tenant(tenant=tenant, name=data["name"])
        if "plan" in form.changed_data:
            services.set_tenant_plan(tenant=tenant, plan=data["plan"])
        if "status" in form.changed_data:
            services.set_tenant_status(tenant=tenant, status=data["status"])
        _become(obj, tenant)

    def save_formset(self, request, form, formset, change):
        if formset.model is Membership:
            _save_memberships(form.instance, formset)
        else:
            super().save_formset(request, form, formset, change)

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
class MembershipAdmin(ServiceWriteAdmin):
    """Members through ``tenants.services`` (audited, the last-owner rule holds); only the role changes."""

    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["role", "tenant"]
    search_fields = ["user__email", "tenant__slug"]
    autocomplete_fields = ["user", "tenant"]

    def get_readonly_fields(self, request, obj=None):
        return ["user", "tenant", "created_at"] if obj else []

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if not change:
            made = services.add_member(
                tenant=data["tenant"], email=data["user"].email, role=data["role"], acting_role=Role.OWNER
            )
            _become(obj, made)
            return
        if "role" in form.changed_data:
            services.change_member_role(
                tenant=obj.tenant, membership_id=obj.pk, role=data["role"], acting_role=Role.OWNER
            )
        obj.refresh_from_db()

    def delete_model(self, request, obj):
        services.remove_member(tenant=obj.tenant, membership_id=obj.pk, acting_role=Role.OWNER)


class ApiKeyCreateForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=Scope.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = ApiKey
        fields = ["tenant", "name", "scopes", "role", "expires_at"]


@admin.register(ApiKey)
class ApiKeyAdmin(ServiceWriteAdmin):
    """Keys are made (``create_api_key``) and revoked (the action, ``revoke_api_key``) here, never edited.

    An edited expiry or a cleared ``revoked_at`` would bring a key back without an audit row, and a deleted
    row would take its lineage with it: on an existing key every field is read-only and delete is off.
    """

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
        return [f.name for f in ApiKey._meta.fields if f.name != "key_hash"] if obj else []

    def has_delete_permission(self, request, obj=None):
        return False  # revoke instead

    def save_model(self, request, obj, form, change):
        if change:
            return  # nothing on an existing key is editable here
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
