"""REST endpoints of the model registry (the prediction endpoint is a separate process)."""

from __future__ import annotations

from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from core import naming
from core.errors import NotFoundError
from core.serializers import validated_input
from serving import services
from serving.models import ModelVersion, RegisteredModel
from serving.serializers import (
    AliasInputSerializer,
    ModelVersionListSerializer,
    ModelVersionSerializer,
    RegisteredModelSerializer,
    TrafficInputSerializer,
)
from tenants.scoping import TenantScopedViewSet

MODEL_NAME = naming.MODEL_NAME_PATTERN
ALIAS_NAME = naming.ALIAS_NAME_PATTERN


class RegisteredModelViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Models by name, with their aliases and traffic split; aliases and traffic are changed here."""

    scoped_model = RegisteredModel
    serializer_class = RegisteredModelSerializer
    lookup_field = "name"
    lookup_value_regex = MODEL_NAME
    http_method_names = ["get", "put", "delete", "head", "options"]

    def refine_queryset(self, queryset):
        # The versions only for the latest ready number: not their manifests and metrics.
        versions = Prefetch("versions", queryset=ModelVersion.objects.only("id", "model_id", "version", "status"))
        return queryset.prefetch_related("aliases__version", versions)

    @extend_schema(request=AliasInputSerializer, responses=RegisteredModelSerializer)
    @action(detail=True, methods=["put", "delete"], url_path=rf"aliases/(?P<alias>{ALIAS_NAME})")
    def alias(self, request, name=None, alias=None):
        self.get_object()
        if request.method == "DELETE":
            services.delete_alias(tenant=self.caller.tenant, model_name=name, alias=alias)
            return Response(status=status.HTTP_204_NO_CONTENT)
        data = validated_input(AliasInputSerializer, request)
        services.set_alias(tenant=self.caller.tenant, model_name=name, alias=alias, version=data["version"])
        return Response(RegisteredModelSerializer(self.get_object()).data)

    @extend_schema(request=TrafficInputSerializer, responses=RegisteredModelSerializer)
    @action(detail=True, methods=["put"])
    def traffic(self, request, name=None):
        self.get_object()
        data = validated_input(TrafficInputSerializer, request)
        services.set_traffic(tenant=self.caller.tenant, model_name=name, weights=data["weights"])
        return Response(RegisteredModelSerializer(self.get_object()).data)


class ModelVersionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """A model's published versions: metrics, manifest, lineage; archive or delete unreferenced ones."""

    scoped_model = ModelVersion
    lookup_field = "version"
    lookup_value_regex = r"[0-9]{1,9}"
    http_method_names = ["get", "post", "delete", "head", "options"]

    @staticmethod
    def url_kwargs_for(version: ModelVersion) -> dict[str, str]:
        return {"model_name": version.model.name, "version": str(version.version)}

    def get_serializer_class(self):
        return ModelVersionListSerializer if self.action == "list" else ModelVersionSerializer

    def refine_queryset(self, queryset):
        return (
            queryset.filter(model__name=self.kwargs["model_name"])
            .exclude(status=ModelVersion.Status.PUBLISHING)
            .select_related("model", "job")
            .prefetch_related("aliases")
            .order_by("-version")
        )

    def list(self, request, *args, **kwargs):
        if not RegisteredModel.objects.for_tenant(self.caller.tenant).filter(name=kwargs["model_name"]).exists():
            raise NotFoundError("No such model.")
        return super().list(request, *args, **kwargs)

    @extend_schema(request=None, responses=ModelVersionSerializer)
    @action(detail=True, methods=["post"])
    def archive(self, request, model_name=None, version=None):
        self.get_object()
        archived = services.archive_version(tenant=self.caller.tenant, model_name=model_name, version=int(version))
        return Response(ModelVersionSerializer(archived).data)

    @extend_schema(responses={204: None})
    def destroy(self, request, model_name=None, version=None):
        self.get_object()
        services.delete_version(tenant=self.caller.tenant, model_name=model_name, version=int(version))
        return Response(status=status.HTTP_204_NO_CONTENT)
