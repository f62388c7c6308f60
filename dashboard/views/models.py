"""Models: versions side by side, one version's evaluation, alias moves, the traffic split and "try it"."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote

import requests
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.contrib import messages
from django.db.models import Count, Q
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect

from core.errors import ServiceError, error_body
from dashboard.access import TenantPage, refusal
from dashboard.forms import AliasForm, form_error
from datasets import selectors as dataset_selectors
from serving import exports, selectors, services, tokens
from serving.models import ModelAlias, ModelVersion, RegistryEvent
from tenants.models import Role

logger = logging.getLogger(__name__)
# Metrics shown side by side, in this order, when a version has them.
COMPARED_METRICS = ["auc", "accuracy", "log_loss", "f1", "precision", "recall", "macro_f1", "examples"]
MAX_TRY_BODY = 64 * 1024


class ModelListPage(TenantPage):
    http_method_names = ["get", "head"]
    template_name = "dashboard/models.html"
    section = "models"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        published = ~Q(versions__status=ModelVersion.Status.PUBLISHING)
        context["models"] = selectors.models_of(tenant=self.caller.tenant).annotate(
            version_count=Count("versions", filter=published)
        )
        return context


class ModelDetailPage(TenantPage):
    template_name = "dashboard/model_detail.html"
    section = "models"

    def model(self):
        return get_object_or_404(selectors.models_of(tenant=self.caller.tenant), name=self.kwargs["name"])

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        model = self.model()
        versions = list(
            selectors.visible_versions(tenant=self.caller.tenant, model_name=model.name)
            .prefetch_related("aliases")
            .order_by("-version")
        )
        shown = [m for m in COMPARED_METRICS if any(m in (v.metrics or {}) for v in versions)]
        ready = [v for v in versions if v.status == ModelVersion.Status.READY]
        aliases = {a.name: a.version.version for a in model.aliases.all()}
        context.update(
            model=model,
            versions=versions,
            metric_names=shown,
            rows=[(v, [(v.metrics or {}).get(m) for m in shown]) for v in versions],
            ready_versions=ready,
            aliases=aliases,
            rollback_to=_rollback_target(model, ready),
            traffic=[(v.version, (model.traffic or {}).get(str(v.version), 0)) for v in ready],
            events=RegistryEvent.objects.for_tenant(self.caller.tenant).filter(model=model)[:20],
            can_predict=self.can(Role.MEMBER),
            example=json.dumps(_example_request(ready[0]) if ready else {"instances": []}, ensure_ascii=False),
        )
        return context

    def act(self, request, **kwargs):
        model = self.model()
        tenant = self.caller.tenant
        action = request.POST.get("action")
        if action == "set_alias":
            form = AliasForm(request.POST)
            if not form.is_valid():
                raise ServiceError(form_error(form), code="invalid_alias")
            alias, version = form.cleaned_data["alias"], form.cleaned_data["version"]
            services.set_alias(tenant=tenant, model_name=model.name, alias=alias, version=version)
            messages.success(request, f"{alias} -> v{version}.")
        elif action == "rollback":
            moved = services.rollback_alias(tenant=tenant, model_name=model.name, alias=ModelAlias.DEFAULT)
            messages.success(request, f"{moved.name} -> v{moved.version.version}.")
        elif action == "delete_alias":
            alias = request.POST.get("alias", "")
            services.delete_alias(tenant=tenant, model_name=model.name, alias=alias)
            messages.success(request, f"Removed the alias {alias}.")
        elif action == "traffic":
            weights = _traffic_weights(request.POST)
            services.set_traffic(tenant=tenant, model_name=model.name, weights=weights)
            messages.success(request, "Traffic split saved." if weights else "Traffic split removed.")
        elif action == "archive":
            version = _int(request.POST.get("version"), "version")
            services.archive_version(tenant=tenant, model_name=model.name, version=version)
            messages.success(request, f"Archived v{version}.")
        else:
            raise ServiceError("Unknown action.", code="unknown_action")
        return redirect("dashboard:model", name=model.name)


class VersionDetailPage(TenantPage):
    http_method_names = ["get", "head"]
    template_name = "dashboard/version_detail.html"
    section = "models"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        version = get_object_or_404(
            selectors.visible_versions(tenant=self.caller.tenant, model_name=self.kwargs["name"]),
            version=self.kwargs["version"],
        )
        metrics = version.metrics or {}
        context.update(
            version=version,
            model=version.model,
            scalar_metrics={k: v for k, v in metrics.items() if isinstance(v, int | float | str)},
            roc_curve=metrics.get("roc_curve"),
            confusion=_confusion_rows(metrics),
            per_class=metrics.get("per_class", {}),
            files=sorted((version.manifest or {}).get("files", {}).items()),
            signature=(version.manifest or {}).get("signature", {}),
        )
        return context


class TryPredictionView(TenantPage):
    """POST a prediction body; it is sent to the serving process as the signed-in member and its answer returned.

    The answer (status, body and the version that answered) is the serving
    process's own, so the box shows exactly what an API client would get.
    """

    write_role = Role.MEMBER  # needs the predict scope, which viewers lack
    http_method_names = ["post"]

    def act(self, request, **kwargs):
        model = get_object_or_404(selectors.models_of(tenant=self.caller.tenant), name=self.kwargs["name"])
        if len(request.body) > MAX_TRY_BODY:
            return JsonResponse(error_body("payload_too_large", "At most 64 KiB here."), status=413)
        version = request.GET.get("version", "")
        if version and not (version.isascii() and version.isdigit() and len(version) <= 9):
            return JsonResponse(error_body("invalid_version", "version is a number."), status=400)
        try:
            answer = serving_post(
                caller=self.caller, model_name=model.name, version=version, verb=":predict", body=request.body
            )
        except ServingUnreachable:
            return JsonResponse(
                error_body("serving_unavailable", "The serving process did not answer; try again shortly."),
                status=502,
            )
        response = HttpResponse(answer.content, status=answer.status_code, content_type="application/json")
        if "X-Model-Version" in answer.headers:
            response["X-Model-Version"] = answer.headers["X-Model-Version"]
        return response


class ServingUnreachable(Exception):
    """The serving process did not answer (down, refused, timed out)."""


def serving_post(*, caller, model_name: str, verb: str, body: bytes, version: str = "") -> requests.Response:
    """POST ``body`` to the serving process's ``verb`` (``:predict``, ``:explain``) for the model, as the person.

    The request carries a short-lived token of the signed-in member's rights now (``serving.tokens``), so serving
    applies the same scoping, scopes, rate limit and metering as to an API key; the dashboard adds none of its own.
    ``version`` (digits, checked by the caller) pins a version; empty lets serving route.
    """
    path = f"/v1/models/{quote(model_name)}" + (f"/versions/{version}" if version else "")
    token = tokens.mint(tenant=caller.tenant, user=caller.user)
    try:
        return requests.post(
            settings.SERVING_URL.rstrip("/") + path + verb,
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=10,  # a dashboard call never holds an API worker for long
        )
    except requests.RequestException as exc:
        logger.warning("dashboard %s could not reach serving at %s: %s", verb, settings.SERVING_URL, exc)
        raise ServingUnreachable from exc


class VersionDownloadView(TenantPage):
    """The version as one .tar.gz, with the API's own checks (size, concurrent downloads, integrity)."""

    http_method_names = ["get", "head"]

    def get(self, request, *args, **kwargs):
        version = get_object_or_404(
            selectors.visible_versions(tenant=self.caller.tenant, model_name=self.kwargs["name"]).select_related(
                "model"
            ),
            version=self.kwargs["version"],
        )
        try:
            return exports.archive_response(version=version, head=request.method == "HEAD")
        except ServiceError as error:
            return refusal(request, title="Not downloaded", message=error.message, status=error.status_code)


class ModelExportView(TenantPage):
    """A TensorFlow Serving or KServe config for the model, as text the browser shows or saves."""

    http_method_names = ["get", "head"]

    def get(self, request, *args, **kwargs):
        model = get_object_or_404(selectors.models_of(tenant=self.caller.tenant), name=self.kwargs["name"])
        engine = request.GET.get("engine", "tf-serving")
        if engine not in {"tf-serving", "kserve"}:
            return refusal(request, title="Unknown engine", message="engine is tf-serving or kserve.", status=400)
        text = exports.export_config(model=model, engine=engine, base_path=None)
        return HttpResponse(text, content_type="text/plain; charset=utf-8")


def _int(raw: str | None, name: str) -> int:
    if raw is None or not (raw.isascii() and raw.isdigit() and len(raw) <= 9):
        raise ServiceError(f"{name} is a whole number.", code=f"invalid_{name}")
    return int(raw)


def _traffic_weights(post) -> dict[str, int]:
    weights = {}
    for key, value in post.items():
        if key.startswith("weight_") and value.strip():
            weights[key.removeprefix("weight_")] = _int(value.strip(), "weight")
    return weights


def _rollback_target(model, ready: list[ModelVersion]) -> int | None:
    """Where the roll-back button would move production (as the API's rollback does), if it is still ready."""
    previous = selectors.version_before_last_move(model=model, alias=ModelAlias.DEFAULT)
    return previous if previous in {v.version for v in ready} else None


def _confusion_rows(metrics: dict[str, Any]) -> list[tuple[str, list[tuple[int, float]]]]:
    """Confusion matrix rows with each cell's share of its row (for shading)."""
    matrix, labels = metrics.get("confusion_matrix"), metrics.get("labels")
    if not matrix or not labels:
        return []
    rows = []
    for label, counts in zip(labels, matrix, strict=False):
        total = sum(counts) or 1
        rows.append((label, [(count, count / total) for count in counts]))
    return rows


def _example_request(version: ModelVersion) -> dict[str, Any]:
    """A real first row of the version's training data, as an instance; a typed placeholder without one."""
    manifest = version.manifest or {}
    features = manifest.get("feature_columns") or []
    dataset = version.dataset
    if dataset is not None and features and dataset.status == dataset.Status.READY:
        try:
            preview = dataset_selectors.preview_rows(dataset=dataset, rows=1)
        except (BotoCoreError, ClientError, OSError, ValueError, ServiceError):
            preview = None
        if preview and preview["rows"]:
            row = dict(zip(preview["columns"], preview["rows"][0], strict=False))
            instance = {name: row.get(name) for name in features}
            return {"instances": [instance[features[0]] if len(features) == 1 else instance]}
    inputs = (manifest.get("signature") or {}).get("inputs", {})
    return {"instances": [{name: "" for name in inputs} if len(inputs) > 1 else ""]}
