"""REST endpoints for datasets and direct-to-S3 uploads."""

from __future__ import annotations

import logging

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from core.errors import ConflictError, PayloadTooLargeError, QuotaExceededError
from core.params import filter_status, text_param
from core.parsers import SafeJSONParser
from core.serializers import validated_input
from datasets import selectors, services
from datasets.models import Dataset, DatasetUpload
from datasets.serializers import (
    DatasetCreateSerializer,
    DatasetListSerializer,
    DatasetSerializer,
    DatasetUploadCreatedSerializer,
    DatasetUploadSerializer,
    PreviewSerializer,
    UploadCompleteSerializer,
    UploadCreateSerializer,
)
from datasets.uploads import DatasetFormParser, DatasetUploadHandler, hard_limit_bytes
from tenants.scoping import TenantScopedViewSet

logger = logging.getLogger(__name__)

MULTIPART_OVERHEAD = 64 * 1024  # form fields and boundaries around the file


class DatasetViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Datasets: immutable versions of named files, validated and profiled."""

    scoped_model = Dataset
    parser_classes = [DatasetFormParser]
    http_method_names = ["get", "post", "delete", "head", "options"]

    def get_serializer_class(self):
        return DatasetListSerializer if self.action == "list" else DatasetSerializer

    def refine_queryset(self, queryset):
        if self.action != "list":
            return queryset
        queryset = filter_status(queryset, self.request, Dataset.Status.values)
        name = text_param(self.request, "name")
        if name:
            queryset = queryset.filter(name=name)
        return queryset.order_by("-created_at")

    upload_handler: DatasetUploadHandler | None = None

    def initial(self, request, *args, **kwargs):
        if request.method == "POST" and self.action == "create":
            # Stream or stage the file, hashed and counted, before anything reads the body.
            self.upload_handler = DatasetUploadHandler(request._request, limit_bytes=hard_limit_bytes())
            request._request.upload_handlers = [self.upload_handler]
        super().initial(request, *args, **kwargs)

    def dispatch(self, request, *args, **kwargs):
        try:
            return super().dispatch(request, *args, **kwargs)
        finally:
            # Whatever the request ended with (a refusal, an Idempotency-Key replay, an error), an upload no
            # dataset took is aborted or deleted here: nothing it streamed stays in storage.
            if self.upload_handler is not None:
                self._discard_upload()

    def _discard_upload(self) -> None:
        """Discard what no dataset took; a storage failure here is logged, never turned into the answer."""
        try:
            self.upload_handler.discard()
        except Exception:
            logger.exception("could not discard an unused upload of dataset %s", self.upload_handler.dataset_id)

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=Dataset.Status.values),
            OpenApiParameter("name", str, description="exact dataset name"),
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def receive_body(self, request):
        """Stream or stage the file under the tenant's limits (once; also before an Idempotency-Key fingerprints
        it). Whatever can be refused before the body is read is: a declared length over the limits here, fields
        sent before the file by the upload handler."""
        if self.action != "create" or getattr(self, "_received", False):
            return
        self._received = True
        tenant = self.caller.tenant
        max_dataset, left = services.upload_limit(tenant=tenant)
        handler = self.upload_handler
        handler.limit_bytes = min(max_dataset, left)
        handler.tenant_id = tenant.id  # the object key is under the tenant's prefix: only now may it stream
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise ValidationError({"Content-Length": ["Must be an integer."]}) from None
        if declared > handler.limit_bytes + MULTIPART_OVERHEAD:
            services.check_size(tenant=tenant, size=declared - MULTIPART_OVERHEAD)
        request.data  # noqa: B018 - parse now, through the upload handler
        if handler.exceeded:
            raise _size_error(max_dataset, left)
        if handler.rejection is not None:
            raise handler.rejection

    @extend_schema(request={"multipart/form-data": DatasetCreateSerializer}, responses={201: DatasetSerializer})
    def create(self, request):
        tenant = self.caller.tenant
        self.receive_body(request)
        data = validated_input(DatasetCreateSerializer, request)
        received = data.pop("file")
        stored = getattr(received, "stored", None)  # streamed to its object already (datasets/uploads.py)
        try:
            dataset = services.create_dataset(
                tenant=tenant,
                staged=None if stored else received,
                staged_sha256=getattr(received, "sha256", ""),
                staged_size=received.size,
                stored=stored,
                filename=received.name or "",
                fmt=data.pop("format", None) or None,
                **data,
            )
        finally:
            received.close()
        self.upload_handler.keep()
        return Response(DatasetSerializer(dataset).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None})
    def destroy(self, request, pk=None):
        self.get_object()
        services.delete_dataset(tenant=self.caller.tenant, dataset_id=pk)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        parameters=[OpenApiParameter("rows", int, description=f"1 to {settings.DATASET_PREVIEW_MAX_ROWS}")],
        responses=PreviewSerializer,
    )
    @action(detail=True, methods=["get"])
    def preview(self, request, pk=None):
        dataset = self.get_object()
        rows = _rows_param(request.query_params.get("rows"))
        if dataset.status not in {Dataset.Status.READY, Dataset.Status.VALIDATING}:
            raise ConflictError(f"A dataset that is {dataset.status} has no preview.", code="dataset_not_stored")
        return Response(selectors.preview_rows(dataset=dataset, rows=rows))


def _rows_param(raw: str | None) -> int:
    if raw in (None, ""):
        return 10
    if not (raw.isascii() and raw.lstrip("-").isdigit()):
        raise ValidationError({"rows": ["Must be an integer."]})
    rows = int(raw)
    if not 1 <= rows <= settings.DATASET_PREVIEW_MAX_ROWS:
        raise ValidationError({"rows": [f"Must be between 1 and {settings.DATASET_PREVIEW_MAX_ROWS}."]})
    return rows


def _size_error(max_dataset: int, left: int):
    if max_dataset <= left:
        return PayloadTooLargeError(
            f"The file is over the plan's {max_dataset}-byte dataset limit.",
            code="dataset_too_large",
            details={"limit": max_dataset},
        )
    return QuotaExceededError(
        f"The file is over the {left} bytes of storage quota left.",
        code="storage_quota_exceeded",
        details={"remaining": left},
    )


class DatasetUploadViewSet(mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Multipart uploads straight to S3 with presigned part URLs, for files too large for one request."""

    scoped_model = DatasetUpload
    serializer_class = DatasetUploadSerializer
    parser_classes = [SafeJSONParser]
    http_method_names = ["get", "post", "delete", "head", "options"]

    def refine_queryset(self, queryset):
        return queryset.select_related("dataset")

    @extend_schema(request=None, responses={200: DatasetUploadCreatedSerializer})
    @action(detail=True, methods=["post"], url_path="part-urls")
    def part_urls(self, request, pk=None):
        """Freshly signed part URLs for a pending upload (they live DATASET_PART_URL_TTL_SECONDS).

        A POST, so it needs the write scope and the member role like starting the upload: a URL lets its
        holder write a part, which a read-only caller must never be able to do.
        """
        upload = self.get_object()
        if upload.status != DatasetUpload.Status.PENDING:
            raise ConflictError(f"This upload is {upload.status}.", code="upload_not_pending")
        return Response(DatasetUploadSerializer(upload).data | {"parts": services.part_urls(upload)})

    @extend_schema(request=UploadCreateSerializer, responses={201: DatasetUploadCreatedSerializer})
    def create(self, request):
        data = validated_input(UploadCreateSerializer, request)
        upload, parts = services.start_multipart_upload(
            tenant=self.caller.tenant, fmt=data.pop("format", None) or None, **data
        )
        body = DatasetUploadSerializer(upload).data | {"parts": parts}
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=UploadCompleteSerializer, responses={200: DatasetSerializer})
    @action(detail=True, methods=["post"])
    def complete(self, request, pk=None):
        self.get_object()
        data = validated_input(UploadCompleteSerializer, request)
        dataset = services.complete_multipart_upload(tenant=self.caller.tenant, upload_id=pk, parts=data["parts"])
        return Response(DatasetSerializer(dataset).data)

    @extend_schema(responses={204: None})
    def destroy(self, request, pk=None):
        upload = self.get_object()
        if upload.status != DatasetUpload.Status.PENDING:
            raise ConflictError(f"This upload is {upload.status}.", code="upload_not_pending")
        services.abort_upload(upload=upload)
        return Response(status=status.HTTP_204_NO_CONTENT)
