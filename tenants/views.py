"""REST endpoints for the caller's tenant, its members and its API keys."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.response import Response

from core.serializers import validated_input
from tenants import services
from tenants.models import ApiKey, AuditEvent, Membership, Role
from tenants.scoping import TenantScopedAPIView, TenantScopedViewSet
from tenants.serializers import (
    ApiKeyCreatedSerializer,
    ApiKeyCreateSerializer,
    ApiKeySerializer,
    AuditEventSerializer,
    CurrentTenantSerializer,
    MemberCreateSerializer,
    MembershipSerializer,
    MemberUpdateSerializer,
)


class CurrentTenantView(TenantScopedAPIView):
    """The tenant the credentials belong to, and who the caller is."""

    @extend_schema(responses=CurrentTenantSerializer)
    def get(self, request):
        caller = self.caller
        body = {"type": "api_key" if caller.api_key else "user", "role": caller.role, "scopes": sorted(caller.scopes)}
        if caller.api_key:
            body["api_key"] = caller.api_key
        else:
            body["email"] = caller.user.email
        return Response(CurrentTenantSerializer({"tenant": caller.tenant, "caller": body}).data)


class MemberViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Members and their roles; only owners and admins change them."""

    scoped_model = Membership
    serializer_class = MembershipSerializer
    write_role = Role.ADMIN
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def refine_queryset(self, queryset):
        return queryset.select_related("user")

    @extend_schema(request=MemberCreateSerializer, responses={201: MembershipSerializer})
    def create(self, request):
        data = validated_input(MemberCreateSerializer, request)
        membership = services.add_member(tenant=self.caller.tenant, acting_role=self.caller.role, **data)
        return Response(MembershipSerializer(membership).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=MemberUpdateSerializer, responses=MembershipSerializer)
    def partial_update(self, request, pk=None):
        self.get_object()  # 404 for another tenant's id before any rule is checked
        data = validated_input(MemberUpdateSerializer, request)
        membership = services.change_member_role(
            tenant=self.caller.tenant, membership_id=pk, role=data["role"], acting_role=self.caller.role
        )
        return Response(MembershipSerializer(membership).data)

    def destroy(self, request, pk=None):
        self.get_object()
        services.remove_member(tenant=self.caller.tenant, membership_id=pk, acting_role=self.caller.role)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ApiKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """API keys: the secret is shown once at creation; DELETE revokes."""

    scoped_model = ApiKey
    serializer_class = ApiKeySerializer
    write_role = Role.ADMIN
    http_method_names = ["get", "post", "delete", "head", "options"]

    def refine_queryset(self, queryset):
        return queryset.select_related("created_by", "parent")

    @extend_schema(request=ApiKeyCreateSerializer, responses={201: ApiKeyCreatedSerializer})
    def create(self, request):
        data = validated_input(ApiKeyCreateSerializer, request)
        created = services.create_api_key(
            tenant=self.caller.tenant,
            acting_role=self.caller.role,
            acting_scopes=set(self.caller.scopes),
            acting_expires_at=self.caller.api_key.expires_at if self.caller.api_key else None,
            created_by=self.caller.user,
            parent=self.caller.api_key,
            **data,
        )
        body = ApiKeySerializer(created.api_key).data | {"key": created.raw_key}
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None}, description="Revokes the key and every key it made, at any depth.")
    def destroy(self, request, pk=None):
        self.get_object()
        services.revoke_api_key(tenant=self.caller.tenant, key_id=pk, acting_role=self.caller.role)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Who changed what (owners and admins); newest first, filter with ``?action=``. Read-only by design."""

    scoped_model = AuditEvent
    serializer_class = AuditEventSerializer
    read_role = Role.ADMIN
    http_method_names = ["get", "head", "options"]

    def refine_queryset(self, queryset):
        action = self.request.query_params.get("action")
        return queryset.filter(action=action) if action else queryset
