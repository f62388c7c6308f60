"""Signing in, switching tenant, API keys, members and the audit log."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from core import throttle
from core.errors import ServiceError
from dashboard.access import TenantPage, refusal
from dashboard.forms import ApiKeyForm, MemberForm, RoleForm, form_error, row_id
from tenants import selectors, services
from tenants.models import ApiKey, AuditEvent, Role
from tenants.scoping import SESSION_TENANT_KEY

LOGIN_THROTTLE_SCOPE = "dashboard-login"


class LoginPage(auth_views.LoginView):
    """Email and password; an address that keeps failing is refused (429) until its minute is over."""

    template_name = "dashboard/login.html"
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        wait = throttle.retry_after(scope=LOGIN_THROTTLE_SCOPE, address=_login_ident(request))
        if wait is not None:
            response = refusal(request, title="Too many attempts", message=f"Try again in {wait} seconds.", status=429)
            response["Retry-After"] = str(wait)
            return response
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        throttle.record_failure(scope=LOGIN_THROTTLE_SCOPE, address=_login_ident(self.request))
        return self.render_to_response(self.get_context_data(form=form), status=400)


def _login_ident(request) -> str:
    """Sign-ins are counted per account and address: guessing one password is slowed, other people are not."""
    account = hashlib.sha256(request.POST.get("username", "").strip().lower().encode()).hexdigest()[:16]
    return f"{throttle.client_address(request)}:{account}"


@require_POST
def switch_tenant(request: HttpRequest) -> HttpResponse:
    """Make another of the person's tenants the current one (a tenant they do not belong to is refused)."""
    if not request.user.is_authenticated:
        return redirect("dashboard:login")
    membership = selectors.membership_in(user=request.user, tenant_hint=request.POST.get("tenant", ""))
    if membership is None:
        messages.error(request, "You are not a member of that tenant.")
        return redirect("dashboard:overview")
    request.session[SESSION_TENANT_KEY] = str(membership.tenant_id)
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = ""
    return redirect(target or "dashboard:overview")


class ApiKeysPage(TenantPage):
    template_name = "dashboard/api_keys.html"
    section = "keys"
    write_role = Role.ADMIN

    def get_context_data(self, form: ApiKeyForm | None = None, created=None, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(
            keys=ApiKey.objects.for_tenant(self.caller.tenant).select_related("created_by", "parent"),
            form=form or ApiKeyForm(),
            created=created,
            now=timezone.now(),
        )
        return context

    def act(self, request, **kwargs):
        if request.POST.get("action") == "revoke":
            key = services.revoke_api_key(
                tenant=self.caller.tenant, key_id=_uuid(request.POST.get("key")), acting_role=self.caller.role
            )
            messages.success(request, f"Revoked {key.name} ({key.prefix}…).")
            return redirect("dashboard:api-keys")
        form = ApiKeyForm(request.POST)
        if not form.is_valid():
            messages.error(request, form_error(form))
            return self.render_to_response(self.get_context_data(form=form), status=400)
        days = form.cleaned_data["expires_in_days"]
        created = services.create_api_key(
            tenant=self.caller.tenant,
            name=form.cleaned_data["name"],
            scopes=list(form.cleaned_data["scopes"]),
            role=form.cleaned_data["role"],
            acting_role=self.caller.role,
            acting_scopes=set(self.caller.scopes),
            created_by=self.caller.user,
            expires_at=timezone.now() + timedelta(days=days) if days else None,
        )
        # Rendered, not redirected: the secret is on this one answer and nowhere else.
        response = self.render_to_response(self.get_context_data(created=created), status=201)
        response["Cache-Control"] = "no-store"
        return response


class MembersPage(TenantPage):
    template_name = "dashboard/members.html"
    section = "members"
    write_role = Role.ADMIN

    def get_context_data(self, form: MemberForm | None = None, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(
            members=selectors.members_of(tenant=self.caller.tenant),
            form=form or MemberForm(),
            roles=Role.choices,
        )
        return context

    def act(self, request, **kwargs):
        tenant, acting = self.caller.tenant, self.caller.role
        action = request.POST.get("action")
        if action == "add":
            form = MemberForm(request.POST)
            if not form.is_valid():
                messages.error(request, form_error(form))
                return self.render_to_response(self.get_context_data(form=form), status=400)
            member = services.add_member(tenant=tenant, acting_role=acting, **form.cleaned_data)
            messages.success(request, f"Added {member.user.email} as {member.role}.")
        elif action == "role":
            form = RoleForm(request.POST)
            if not form.is_valid():
                raise ServiceError(form_error(form), code="invalid_role")
            member = services.change_member_role(
                tenant=tenant,
                membership_id=_uuid(request.POST.get("member")),
                role=form.cleaned_data["role"],
                acting_role=acting,
            )
            messages.success(request, f"{member.user.email} is now {member.role}.")
        elif action == "remove":
            services.remove_member(tenant=tenant, membership_id=_uuid(request.POST.get("member")), acting_role=acting)
            messages.success(request, "Member removed.")
        else:
            raise ServiceError("Unknown action.", code="unknown_action")
        return redirect("dashboard:members")


class AuditPage(TenantPage):
    template_name = "dashboard/audit.html"
    section = "audit"
    read_role = Role.ADMIN
    http_method_names = ["get", "head"]

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["events"] = AuditEvent.objects.for_tenant(self.caller.tenant)[:200]
        return context


def _uuid(raw: str | None):
    """A row id from a form; anything that is not one is simply not found."""
    found = row_id(raw)
    if found is None:
        raise ServiceError("No such row.", code="not_found", status_code=404)
    return found
