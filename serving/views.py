"""REST endpoints of the model registry (the prediction endpoint is a separate process)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Prefetch
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.response import Response

from core import naming
from core.errors import NotFoundError
from core.serializers import validated_input
from serving import cards, exports, services
from serving.models import ModelVersion, RegisteredModel
from serving.serializers import (
    AliasInputSerializer,
    CardQuerySerializer,
    ExportQuerySerializer,
    ModelCardSerializer,
    ModelVersionListSerializer,
    ModelVersionSerializer,
    RegisteredModelSerializer,
    TrafficInputSerializer,
    VersionFilesSerializer,
)
from tenants.scoping import TenantScopedViewSet

MODEL_NAME = naming.MODEL_NAME_PATTERN
ALIAS_NAME = naming.ALIAS_NAME_PATTERN


class JSONOnlyNegotiation(DefaultContentNegotiation):
    """Errors and JSON answers in JSON whatever ``?format=`` or ``Accept`` say; the view picks Markdown itself.

    DRF would read ``?format=markdown`` as a renderer's name and answer 404 (no such renderer) before the view runs.
    """

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def _asks_for_markdown(request) -> bool:
    accepted = [part.split(";")[0].strip().lower() for part in request.headers.get("Accept", "").split(",")]
    return "text/markdown" in accepted and "application/json" not in accepted[: accepted.index("text/markdown")]


class RegisteredModelViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Models by name, with their aliases and traffic split; aliases and traffic are changed here."""

    scoped_model = RegisteredModel
    serializer_class = RegisteredModelSerializer
    lookup_field = "name"
    lookup_value_regex = MODEL_NAME
    http_method_names = ["get", "post", "put", "delete", "head", "options"]

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

    @extend_schema(request=None, responses=RegisteredModelSerializer)
    @action(detail=True, methods=["post"], url_path=rf"aliases/(?P<alias>{ALIAS_NAME})/rollback")
    def rollback(self, request, name=None, alias=None):
        """Move the alias back to the version it pointed at before its last move."""
        self.get_object()
        services.rollback_alias(tenant=self.caller.tenant, model_name=name, alias=alias)
        return Response(RegisteredModelSerializer(self.get_object()).data)

    @extend_schema(
        parameters=[ExportQuerySerializer],
        responses={(200, "text/plain"): OpenApiTypes.STR, (200, "application/yaml"): OpenApiTypes.STR},
    )
    @action(detail=True, methods=["get"])
    def export(self, request, name=None):
        """A config for an engine that reads the platform's layout: TensorFlow Serving or KServe."""
        model = self.get_object()  # another tenant's model is 404 whatever the query says
        query = ExportQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        engine = query.validated_data["engine"]
        text = exports.export_config(model=model, engine=engine, base_path=query.validated_data.get("base_path"))
        content_type = "application/yaml" if engine == "kserve" else "text/plain"
        return HttpResponse(text, content_type=f"{content_type}; charset=utf-8")

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

    @extend_schema(responses=VersionFilesSerializer)
    @action(detail=True, methods=["get"])
    def files(self, request, model_name=None, version=None):
        """Every file of the version with a presigned URL that downloads it from object storage directly."""
        found = self.get_object()
        expires_at = timezone.now() + timedelta(seconds=settings.S3_PRESIGNED_URL_TTL_SECONDS)
        body = {
            "model": found.model.name,
            "version": found.version,
            "expires_at": expires_at,
            "files": exports.presigned_files(version=found),
        }
        return Response(VersionFilesSerializer(body).data)

    @extend_schema(
        parameters=[CardQuerySerializer],
        responses={(200, "application/json"): ModelCardSerializer, (200, "text/markdown"): OpenApiTypes.STR},
    )
    @action(detail=True, methods=["get"], content_negotiation_class=JSONOnlyNegotiation)
    def card(self, request, model_name=None, version=None):
        """The version's model card: lineage, PII handling, params, metrics, privacy statement, explanations.

        JSON, or Markdown (to paste into a review) with ``?format=markdown`` or ``Accept: text/markdown``.
        """
        found = self.get_object()  # another tenant's model or version is 404 whatever the query says
        query = CardQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        card = cards.version_card(version=found)
        wanted = query.validated_data.get("format")
        if wanted == "markdown" or (wanted is None and _asks_for_markdown(request)):
            return HttpResponse(cards.card_markdown(card=card), content_type="text/markdown; charset=utf-8")
        return Response(card)

    @extend_schema(responses={(200, "application/gzip"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def download(self, request, model_name=None, version=None):
        """The version as one .tar.gz (``<model>/<version>/…``, the TensorFlow Serving layout), streamed."""
        return exports.archive_response(version=self.get_object(), head=request.method == "HEAD")

    @extend_schema(responses={204: None})
    def destroy(self, request, model_name=None, version=None):
        self.get_object()
        services.delete_version(tenant=self.caller.tenant, model_name=model_name, version=int(version))
        return Response(status=status.HTTP_204_NO_CONTENT)
