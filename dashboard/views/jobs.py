"""Training jobs: the list, the form that starts one, and the live job page."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect

from dashboard.access import TenantPage
from dashboard.forms import JobForm, row_id
from datasets import selectors as dataset_selectors
from datasets.models import Dataset
from training import selectors, services, templates
from training.models import TrainingJob

LOG_LINES = 50


class JobListPage(TenantPage):
    http_method_names = ["get", "head"]
    template_name = "dashboard/jobs.html"
    section = "jobs"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        jobs = selectors.jobs_of(tenant=self.caller.tenant).select_related("dataset").order_by("-created_at")
        status = self.request.GET.get("status", "")
        if status in TrainingJob.Status.values:
            jobs = jobs.filter(status=status)
        else:
            status = ""  # only a known status goes back into the page links
        context.update(
            page=Paginator(jobs, 50).get_page(self.request.GET.get("page")),
            status=status,
            statuses=TrainingJob.Status.choices,
        )
        return context


class JobNewPage(TenantPage):
    """Pick a template and a ready dataset (GET), then fill the form built from both and submit (POST)."""

    template_name = "dashboard/job_new.html"
    section = "jobs"

    def chosen(self) -> tuple[templates.Template | None, Dataset | None]:
        source = self.request.POST if self.request.method == "POST" else self.request.GET
        template = templates.TEMPLATES.get(source.get("template", ""))
        dataset = None
        dataset_id = source.get("dataset", "")
        if dataset_id:
            ready = dataset_selectors.datasets_of(tenant=self.caller.tenant).filter(status=Dataset.Status.READY)
            dataset = ready.filter(pk=row_id(dataset_id)).first() if row_id(dataset_id) else None
        return template, dataset

    def get_context_data(self, form: JobForm | None = None, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        template, dataset = self.chosen()
        if form is None and template is not None and dataset is not None:
            form = JobForm(template=template, dataset=dataset, initial={"model_name": _suggest_name(dataset)})
        context.update(
            templates=list(templates.TEMPLATES.values()),
            datasets=dataset_selectors.datasets_of(tenant=self.caller.tenant)
            .filter(status=Dataset.Status.READY)
            .order_by("name", "-version"),
            template=template,
            dataset=dataset,
            form=form,
        )
        return context

    def act(self, request, **kwargs):
        template, dataset = self.chosen()
        if template is None or dataset is None:
            messages.error(request, "Choose a template and a ready dataset.")
            return self.render_to_response(self.get_context_data(), status=400)
        form = JobForm(request.POST, template=template, dataset=dataset)
        if not form.is_valid():
            messages.error(request, "Check the highlighted fields.")
            return self.render_to_response(self.get_context_data(form=form), status=400)
        job = services.create_job(
            tenant=self.caller.tenant, dataset_id=dataset.pk, template=template.name, **form.job_arguments()
        )
        messages.success(request, f"Job queued: {job.template} -> {job.model_name}.")
        return redirect("dashboard:job", job_id=job.pk)


class JobDetailPage(TenantPage):
    """Status, the per-epoch chart and the log tail; the page's script refreshes them from the REST API."""

    template_name = "dashboard/job_detail.html"
    section = "jobs"

    def job(self) -> TrainingJob:
        return get_object_or_404(
            selectors.jobs_of(tenant=self.caller.tenant).select_related("dataset"), pk=self.kwargs["job_id"]
        )

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        job = self.job()
        context.update(
            job=job,
            active=job.status in TrainingJob.ACTIVE,
            can_cancel=job.status in (TrainingJob.Status.QUEUED, TrainingJob.Status.RUNNING),
            epochs=selectors.job_metric_series(job=job),
            log=selectors.job_log_tail(job=job, lines=LOG_LINES),
            log_lines=LOG_LINES,
        )
        return context

    def act(self, request, **kwargs):
        job = services.cancel_job(tenant=self.caller.tenant, job_id=self.job().pk)
        messages.success(request, "Cancelled." if job.status == TrainingJob.Status.CANCELLED else "Stopping…")
        return redirect("dashboard:job", job_id=job.pk)


def _suggest_name(dataset: Dataset) -> str:
    cleaned = "".join(c if c.isalnum() and c.isascii() else "-" for c in dataset.name.lower()).strip("-_")
    return (cleaned or "model")[:63]
