"""REST endpoints for webhooks (owners and admins): endpoints, their secret, a ping, and the delivery log."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from core.serializers import validated_input
from events import selectors, services
from events.models import WebhookDelivery, WebhookEndpoint
from events.serializers import (
    WebhookCreateSerializer,
    WebhookDeliverySerializer,
    WebhookSerializer,
    WebhookUpdateSerializer,
    WebhookWithSecretSerializer,
)
from tenants.models import Role
from tenants.scoping import TenantScopedViewSet


def _with_secret(created: services.CreatedEndpoint) -> dict:
    return WebhookSerializer(created.endpoint).data | {"secret": created.secret}


class WebhookViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Webhook endpoints: the signing secret is shown once (create, rotate-secret); another tenant's id is 404."""

    scoped_model = WebhookEndpoint
    serializer_class = WebhookSerializer
    read_role = Role.ADMIN  # a URL may carry the receiver's own token
    write_role = Role.ADMIN
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    @extend_schema(request=WebhookCreateSerializer, responses={201: WebhookWithSecretSerializer})
    def create(self, request):
        data = validated_input(WebhookCreateSerializer, request)
        created = services.create_endpoint(tenant=self.caller.tenant, **data)
        response = Response(_with_secret(created), status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"
        return response

    @extend_schema(request=WebhookUpdateSerializer, responses=WebhookSerializer)
    def partial_update(self, request, pk=None):
        self.get_object()  # 404 for another tenant's id before the body is looked at
        data = validated_input(WebhookUpdateSerializer, request)
        endpoint = services.update_endpoint(tenant=self.caller.tenant, endpoint_id=pk, **data)
        return Response(WebhookSerializer(endpoint).data)

    def destroy(self, request, pk=None):
        self.get_object()
        services.delete_endpoint(tenant=self.caller.tenant, endpoint_id=pk)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=WebhookWithSecretSerializer)
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, pk=None):
        """A new signing secret, shown once; the old one keeps signing beside it for 24 hours."""
        self.get_object()
        response = Response(_with_secret(services.rotate_secret(tenant=self.caller.tenant, endpoint_id=pk)))
        response["Cache-Control"] = "no-store"
        return response

    @extend_schema(request=None, responses={202: WebhookDeliverySerializer})
    @action(detail=True, methods=["post"])
    def ping(self, request, pk=None):
        """Send a ``webhook.ping`` event to this endpoint; its delivery shows in the log."""
        self.get_object()
        delivery = services.ping(tenant=self.caller.tenant, endpoint_id=pk)
        return Response(WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses=WebhookDeliverySerializer(many=True))
    @action(detail=True, methods=["get"])
    def deliveries(self, request, pk=None):
        """The endpoint's delivery log, newest first, paginated."""
        endpoint = self.get_object()
        page = self.paginate_queryset(selectors.deliveries_of(endpoint=endpoint))
        return self.get_paginated_response(WebhookDeliverySerializer(page, many=True).data)


class WebhookDeliveryViewSet(mixins.RetrieveModelMixin, TenantScopedViewSet):
    """One delivery of the log, and sending its event again."""

    scoped_model = WebhookDelivery
    serializer_class = WebhookDeliverySerializer
    read_role = Role.ADMIN
    write_role = Role.ADMIN
    http_method_names = ["get", "post", "head", "options"]

    def refine_queryset(self, queryset):
        return queryset.select_related("event")

    @extend_schema(request=None, responses={202: WebhookDeliverySerializer})
    @action(detail=True, methods=["post"])
    def redeliver(self, request, pk=None):
        """The same event (same id) as a new delivery; refused while this one is still being retried."""
        self.get_object()
        delivery = services.redeliver(tenant=self.caller.tenant, delivery_id=pk)
        return Response(WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)
