"""Who is signed in, in which tenant, with what role: the dashboard's one scoping rule.

Every dashboard page derives from :class:`TenantPage`. It resolves the
signed-in person's membership in the session's tenant (the same session key
the REST API reads, so the page's scripts and the page agree), refuses a
suspended tenant, checks the least role for reading and for changing, and
runs the handler as that person for the audit log. Pages read rows only
through selectors given ``self.caller.tenant``; another tenant's id is a 404,
exactly as in the API.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.generic import TemplateView

from core import logs
from core.errors import ServiceError
from tenants import audit, selectors
from tenants.models import Role
from tenants.scoping import SESSION_TENANT_KEY, Caller, caller_for_membership


def current_membership(request: HttpRequest):
    """The membership in the session's tenant, falling back to the person's first one (and remembering it)."""
    memberships = selectors.memberships_of(user=request.user)
    hint = request.session.get(SESSION_TENANT_KEY)
    membership = selectors.membership_in(user=request.user, tenant_hint=hint) if hint else None
    if membership is None:
        membership = memberships.first()
        if membership is not None:
            request.session[SESSION_TENANT_KEY] = str(membership.tenant_id)
    return membership


def refusal(request: HttpRequest, *, title: str, message: str, status: int) -> HttpResponse:
    return render(request, "dashboard/refused.html", {"title": title, "message": message}, status=status)


# The list page of each section: where switching tenants lands (an object of the old tenant is not in the new one).
SECTION_PAGES = {"keys": "api-keys"}


class TenantPage(TemplateView):
    """A page of the signed-in person's current tenant.

    ``read_role`` is the least role that may see the page, ``write_role`` the
    least that may POST to it. POSTs go to ``act`` (which returns the
    response, usually a redirect); a :class:`ServiceError` it raises is shown
    on the page with the error's own 4xx status, and nothing was changed.
    """

    read_role: str = Role.VIEWER
    write_role: str = Role.MEMBER
    section: str = ""
    caller: Caller

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        membership = current_membership(request)
        if membership is None:
            return refusal(request, title="No tenant", message="You are not a member of any tenant.", status=403)
        self.caller = caller_for_membership(membership)
        logs.set_tenant(self.caller.tenant.id)  # the page's log lines name its tenant
        if not self.caller.tenant.is_active:
            return refusal(request, title="Suspended", message="This tenant is suspended.", status=403)
        needed = self.write_role if request.method == "POST" else self.read_role
        if not self.caller.has_role(needed):
            return refusal(request, title="Not allowed", message=f"This needs the {needed} role or higher.", status=403)
        with audit.acting_as(self.caller.audit_actor()):
            return super().dispatch(request, *args, **kwargs)

    def can(self, role: str) -> bool:
        return self.caller.has_role(role)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(
            caller=self.caller,
            tenant=self.caller.tenant,
            memberships=selectors.memberships_of(user=self.request.user),
            section=self.section,
            section_url=reverse(f"dashboard:{SECTION_PAGES.get(self.section, self.section or 'overview')}"),
            can_write=self.can(self.write_role),
            can_admin=self.can(Role.ADMIN),
        )
        return context

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return self.act(request, **kwargs)
        except ServiceError as error:
            messages.error(request, error.message)
            return self.render_to_response(self.get_context_data(**kwargs), status=error.status_code)

    def act(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        return HttpResponse(status=405)
