"""Datasets: the list with an upload form (the page's script sends the file to the REST API), and one dataset."""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect

from core.errors import ServiceError
from dashboard.access import TenantPage
from datasets import selectors, services
from datasets.models import DatasetFormat, PiiMode
from training import selectors as training_selectors

logger = logging.getLogger(__name__)
PREVIEW_ROWS = 20


class DatasetListPage(TenantPage):
    """Uploads go from the page's script to the REST API (with its progress bar); the page itself only reads."""

    http_method_names = ["get", "head"]
    template_name = "dashboard/datasets.html"
    section = "datasets"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        datasets = selectors.datasets_of(tenant=self.caller.tenant).order_by("-created_at")
        page = Paginator(datasets, 50).get_page(self.request.GET.get("page"))
        max_dataset, left = services.upload_limit(tenant=self.caller.tenant)
        context.update(
            page=page,
            formats=DatasetFormat.choices,
            pii_modes=PiiMode.choices,
            upload_limit=min(max_dataset, left),
        )
        return context


class DatasetDetailPage(TenantPage):
    template_name = "dashboard/dataset_detail.html"
    section = "datasets"

    def dataset(self):
        return get_object_or_404(selectors.datasets_of(tenant=self.caller.tenant), pk=self.kwargs["dataset_id"])

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        dataset = self.dataset()
        columns = (dataset.stats or {}).get("columns", {})
        context.update(
            dataset=dataset,
            columns=[{**column, "stats": columns.get(column["name"], {})} for column in dataset.schema],
            label_distribution=(dataset.stats or {}).get("label_distribution", {}),
            preview=self._preview(dataset),
            in_use=training_selectors.dataset_in_use(dataset=dataset),
            preview_rows=PREVIEW_ROWS,
            max_rows=settings.DATASET_PREVIEW_MAX_ROWS,
        )
        return context

    @staticmethod
    def _preview(dataset) -> dict[str, Any] | None:
        if dataset.status != dataset.Status.READY:
            return None
        try:
            return selectors.preview_rows(dataset=dataset, rows=PREVIEW_ROWS)
        except ServiceError as exc:  # the stored object is refused by the reader (e.g. a decompression bomb)
            logger.warning("preview of dataset %s refused: %s", dataset.pk, exc.code)
            return {"unavailable": True}
        except (BotoCoreError, ClientError, OSError, ValueError):
            logger.warning("preview of dataset %s failed", dataset.pk, exc_info=True)
            return {"unavailable": True}

    def act(self, request, **kwargs):
        dataset = self.dataset()
        services.delete_dataset(tenant=self.caller.tenant, dataset_id=dataset.pk)
        messages.success(request, f"Deleted {dataset.name} v{dataset.version}.")
        return redirect("dashboard:datasets")
