"""REST endpoints for model templates and training jobs."""

from __future__ import annotations

import uuid

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from core.params import filter_status, text_param
from core.parsers import SafeJSONParser
from core.serializers import validated_input
from datasets.models import Dataset
from tenants.models import Role
from tenants.scoping import TenantScopedAPIView, TenantScopedViewSet
from training import selectors, services, templates
from training.models import TrainingJob
from training.serializers import PrivacyBudgetInputSerializer, TrainingJobCreateSerializer, TrainingJobSerializer


class TemplateListView(TenantScopedAPIView):
    """Model templates with the JSON Schema of their hyperparameters and the columns they read."""

    @extend_schema(responses={200: {"type": "array", "items": {"type": "object"}}})
    def get(self, request):
        return Response([templates.describe(t) for t in templates.TEMPLATES.values()])


class TrainingJobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Training jobs: submit, follow (status, progress, metrics per epoch, log tail), cancel."""

    scoped_model = TrainingJob
    serializer_class = TrainingJobSerializer
    parser_classes = [SafeJSONParser]
    http_method_names = ["get", "post", "head", "options"]
    LOG_TAIL_MAX = 500

    def refine_queryset(self, queryset):
        if self.action != "list":
            return queryset
        params = self.request.query_params
        queryset = filter_status(queryset, self.request, TrainingJob.Status.values)
        model_name = text_param(self.request, "model_name")
        if model_name:
            queryset = queryset.filter(model_name=model_name)
        if params.get("dataset"):
            try:
                queryset = queryset.filter(dataset_id=uuid.UUID(params["dataset"]))
            except ValueError:
                raise ValidationError({"dataset": ["Must be a dataset id."]}) from None
        return queryset.order_by("-created_at")

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=TrainingJob.Status.values),
            OpenApiParameter("model_name", str),
            OpenApiParameter("dataset", str),
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=TrainingJobCreateSerializer, responses={201: TrainingJobSerializer})
    def create(self, request):
        data = validated_input(TrainingJobCreateSerializer, request)
        job = services.create_job(tenant=self.caller.tenant, dataset_id=data.pop("dataset"), **data)
        return Response(TrainingJobSerializer(job).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=TrainingJobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        self.get_object()
        job = services.cancel_job(tenant=self.caller.tenant, job_id=pk)
        return Response(TrainingJobSerializer(job).data)

    @extend_schema(responses={200: {"type": "object"}})
    @action(detail=True, methods=["get"])
    def metrics(self, request, pk=None):
        job = self.get_object()
        return Response({"job": str(job.id), "epochs": selectors.job_metric_series(job=job), "final": job.metrics})

    @extend_schema(parameters=[OpenApiParameter("lines", int)], responses={200: {"type": "object"}})
    @action(detail=True, methods=["get"])
    def logs(self, request, pk=None):
        job = self.get_object()
        raw = request.query_params.get("lines") or "100"
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= self.LOG_TAIL_MAX:
            raise ValidationError({"lines": [f"Must be between 1 and {self.LOG_TAIL_MAX}."]})
        return Response({"job": str(job.id), "lines": selectors.job_log_tail(job=job, lines=int(raw))})


class DatasetPrivacyViewSet(TenantScopedViewSet):
    """A dataset's differential-privacy budget: what its private jobs spent and what is left (GET), and setting
    or clearing the budget (PUT, admins: it is what keeps members' jobs within the data owner's limit)."""

    scoped_model = Dataset
    parser_classes = [SafeJSONParser]
    http_method_names = ["get", "put", "head", "options"]
    write_role = Role.ADMIN
    serializer_class = PrivacyBudgetInputSerializer  # for the schema's request body; answers are plain objects

    @extend_schema(responses={200: {"type": "object"}})
    def retrieve(self, request, pk=None):
        return Response(selectors.privacy_budget(dataset=self.get_object()))

    @extend_schema(request=PrivacyBudgetInputSerializer, responses={200: {"type": "object"}})
    def update(self, request, pk=None):
        dataset = self.get_object()
        data = validated_input(PrivacyBudgetInputSerializer, request)
        return Response(
            services.set_privacy_budget(
                tenant=self.caller.tenant, dataset_id=dataset.pk, epsilon=data["epsilon"], delta=data["delta"]
            )
        )
