"""Models: versions side by side, one version's evaluation, alias moves, the traffic split and "try it"."""

from __future__ import annotations

import json
import logging
import math
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
from serving import cards, exports, selectors, services, tokens
from serving.models import ModelAlias, ModelVersion, RegistryEvent
from tenants.models import Role
from training import templates

logger = logging.getLogger(__name__)
# Metrics shown side by side, in this order, when a version has them.
COMPARED_METRICS = ["auc", "accuracy", "log_loss", "f1", "precision", "recall", "macro_f1", "examples"]
MAX_TRY_BODY = 64 * 1024
MAX_FIELD = 16 * 1024  # characters of one typed input kept (the body as a whole is bounded by MAX_TRY_BODY)
MAX_SHOWN_ATTRIBUTIONS = 1000  # positions, tokens or features shown from one explanation
# Numeric dtypes of a signature's inputs: what a typed column value is converted to before it is sent.
NUMERIC_DTYPES = ("float", "int", "double", "uint")
# How long a dashboard call waits for serving's answer: try-it's predictions briefly (a dashboard call never holds
# an API worker for long); an explanation longer, since the first one of a version in a serving process imports
# TensorFlow, fetches and loads the SavedModel and traces its explain signature (tens of seconds on a cold process).
SERVING_CONNECT_TIMEOUT_SECONDS = 10
PREDICT_TIMEOUT_SECONDS = 10
EXPLAIN_TIMEOUT_SECONDS = 60


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
        # The global explanations shown are production's version's when it is ready, else the latest ready one's.
        production = aliases.get(ModelAlias.DEFAULT)
        shown_version = next((v for v in ready if v.version == production), ready[0] if ready else None)
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
            global_version=shown_version,
            global_rows=global_rows(_global_of(shown_version) if shown_version else None),
            global_explanations=_global_of(shown_version) if shown_version else None,
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
    """One version: its evaluation, its model card (lineage, PII handling, privacy statement, explanations), the
    global explanations as a ranked list, and a form that explains one typed input through the serving process.

    A POST is that form (members and up: it needs the predict scope); the page renders again with the input's
    attributions, or with serving's own refusal (its status and message).
    """

    http_method_names = ["get", "head", "post"]
    template_name = "dashboard/version_detail.html"
    section = "models"
    explain_input: dict[str, str] | None = None
    explained: dict[str, Any] | None = None

    def version(self) -> ModelVersion:
        return get_object_or_404(
            selectors.visible_versions(tenant=self.caller.tenant, model_name=self.kwargs["name"]).select_related(
                "dataset"
            ),
            version=self.kwargs["version"],
        )

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        version = self.version()
        metrics = version.metrics or {}
        card = cards.version_card(version=version)
        fields = explain_fields(version)
        typed = self.explain_input or {}
        context.update(
            version=version,
            model=version.model,
            scalar_metrics={k: v for k, v in metrics.items() if isinstance(v, int | float | str)},
            roc_curve=metrics.get("roc_curve"),
            confusion=_confusion_rows(metrics),
            per_class=metrics.get("per_class", {}),
            files=sorted((version.manifest or {}).get("files", {}).items()),
            signature=(version.manifest or {}).get("signature", {}),
            card=card,
            global_rows=global_rows(card["global_explanations"]),
            # Only a version exported with an explain signature can answer (older ones: serving's 409).
            can_explain=self.can(Role.MEMBER)
            and version.status == ModelVersion.Status.READY
            and card["explanation"] is not None
            and bool(fields),
            explain_fields=[dict(field, value=typed.get(field["name"], "")) for field in fields],
            explained=self.explained,
        )
        return context

    def act(self, request, **kwargs):
        version = self.version()  # another tenant's version is 404 before anything is read from the form
        fields = explain_fields(version)
        self.explain_input = {f["name"]: request.POST.get(f["name"], "")[:MAX_FIELD] for f in fields}
        body = json.dumps({"instances": [explain_instance(version, fields, self.explain_input)]}).encode()
        if len(body) > MAX_TRY_BODY:
            raise ServiceError("At most 64 KiB here.", code="payload_too_large", status_code=413)
        try:
            answer = serving_post(
                caller=self.caller,
                model_name=version.model.name,
                version=str(version.version),
                verb=":explain",
                body=body,
                timeout=EXPLAIN_TIMEOUT_SECONDS,
            )
        except ServingUnreachable as exc:
            raise ServiceError(
                "The serving process did not answer; try again shortly.", code="serving_unavailable", status_code=502
            ) from exc
        if answer.status_code != 200:
            status = answer.status_code if 400 <= answer.status_code < 500 else 502
            raise ServiceError(_serving_message(answer), code="explain_refused", status_code=status)
        self.explained = read_explanation(answer)
        return self.render_to_response(self.get_context_data(**kwargs))


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


def serving_post(
    *,
    caller,
    model_name: str,
    verb: str,
    body: bytes,
    version: str = "",
    timeout: float | None = None,
) -> requests.Response:
    """POST ``body`` to the serving process's ``verb`` (``:predict``, ``:explain``) for the model, as the person.

    The request carries a short-lived token of the signed-in member's rights now (``serving.tokens``), so serving
    applies the same scoping, scopes, rate limit and metering as to an API key; the dashboard adds none of its own.
    ``version`` (digits, checked by the caller) pins a version; empty lets serving route. ``timeout``: seconds
    to wait for the answer (``PREDICT_TIMEOUT_SECONDS`` when None; ``EXPLAIN_TIMEOUT_SECONDS`` for explanations).
    """
    timeout = PREDICT_TIMEOUT_SECONDS if timeout is None else timeout
    path = f"/v1/models/{quote(model_name)}" + (f"/versions/{version}" if version else "")
    token = tokens.mint(tenant=caller.tenant, user=caller.user)
    try:
        return requests.post(
            settings.SERVING_URL.rstrip("/") + path + verb,
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=(min(SERVING_CONNECT_TIMEOUT_SECONDS, timeout), timeout),
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


# --- explanations -------------------------------------------------------------------------------------------------

INPUT_HELP = {
    "id_sequence": ("Item ids, separated by spaces", "12 85 3 9"),
    "text": ("Text", ""),
}


def explain_fields(version: ModelVersion) -> list[dict[str, Any]]:
    """The form's inputs for a version: one for a sequence of ids or a text, one per feature column otherwise."""
    manifest = version.manifest or {}
    columns = [str(c) for c in manifest.get("feature_columns") or []]
    if not columns:
        return []
    try:
        kind = templates.manifest_kinds({"template": version.template} | manifest)["input_kind"]
    except (ValueError, KeyError):
        return []
    if kind in INPUT_HELP and len(columns) == 1:
        label, placeholder = INPUT_HELP[kind]
        return [{"name": "input", "column": columns[0], "label": label, "kind": kind, "placeholder": placeholder}]
    inputs = (manifest.get("signature") or {}).get("inputs") or {}
    fields = []
    for index, column in enumerate(columns):
        dtype = str((inputs.get(column) or {}).get("dtype", "string"))
        numeric = dtype.startswith(NUMERIC_DTYPES)
        fields.append(
            {
                "name": f"feature_{index}",
                "column": column,
                "label": column,
                "kind": "number" if numeric else "string",
                "placeholder": "a number" if numeric else "",
            }
        )
    return fields


def explain_instance(version: ModelVersion, fields: list[dict[str, Any]], typed: dict[str, str]) -> Any:
    """One instance as ``:predict`` takes it: the bare value for a one-column model, else ``{column: value}``."""
    values: dict[str, Any] = {}
    for field in fields:
        raw = typed.get(field["name"], "")
        if field["kind"] == "number":
            raw = raw.strip()
            try:
                values[field["column"]] = float(raw) if raw else None
            except ValueError:
                raise ServiceError(f"{field['label']} is a number.", code="invalid_input") from None
        else:
            values[field["column"]] = raw
    if len(fields) == 1 and fields[0]["kind"] in INPUT_HELP:
        return values[fields[0]["column"]]
    return values


def _serving_message(answer: requests.Response) -> str:
    """Serving's own error message (its envelope), or a plain sentence when it sent none."""
    try:
        error = answer.json()["error"]
    except (ValueError, KeyError, TypeError):
        error = None
    # The serving process's body is {"error": "<code>: <message>"}; the platform's envelope is also understood.
    message = error.get("message") if isinstance(error, dict) else error
    if isinstance(message, str) and message:
        return f"Serving refused the explanation ({answer.status_code}): {message[:500]}"
    return f"Serving answered {answer.status_code} without an explanation."


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def read_explanation(answer: requests.Response) -> dict[str, Any]:
    """The first instance's explanation in the contract's shape (KServe v1 explainer, Vertex-style attributions),
    as rows to draw: each position's, token's or feature's attribution with its share of the largest magnitude.

    Anything not in that shape is a 502 (the page never shows half-read numbers).
    """
    unreadable = ServiceError(
        "The serving process answered an explanation this page cannot read.", code="bad_explanation", status_code=502
    )
    try:
        data = answer.json()
        attribution = data["explanations"][0]["attributions"][0]
        features = attribution["feature_attributions"]
        prediction = data.get("predictions", [None])[0]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise unreadable from None
    if not isinstance(attribution, dict) or not isinstance(features, dict):
        raise unreadable
    rows: list[dict[str, Any]] = []
    sequence = False
    for column, value in features.items():
        if isinstance(value, list):
            sequence = True
            for item in value:
                if not isinstance(item, dict) or _number(item.get("attribution")) is None:
                    raise unreadable
                rows.append(
                    {
                        "column": str(column),
                        "position": item.get("position") if isinstance(item.get("position"), int) else None,
                        "label": str(item.get("token", "")),
                        "value": _number(item["attribution"]),
                    }
                )
        elif _number(value) is not None:
            rows.append({"column": str(column), "position": None, "label": str(column), "value": _number(value)})
        else:
            raise unreadable
    rows = rows[:MAX_SHOWN_ATTRIBUTIONS]
    largest = max((abs(r["value"]) for r in rows), default=0.0) or 1.0
    for row in rows:
        row["share"] = round(abs(row["value"]) / largest, 4)
        row["percent"] = round(100 * row["share"], 1)
        row["sign"] = "positive" if row["value"] > 0 else "negative" if row["value"] < 0 else "zero"
    return {
        "sequence": sequence,
        "rows": rows,
        "ranked": sorted(rows, key=lambda r: -abs(r["value"]))[:20],
        "prediction": json.dumps(prediction, ensure_ascii=False)[:2000],
        "output": str(attribution.get("output_display_name") or attribution.get("output_name") or ""),
        "output_name": str(attribution.get("output_name") or "output"),
        "output_index": attribution.get("output_index"),
        "instance_output": _number(attribution.get("instance_output_value")),
        "baseline_output": _number(attribution.get("baseline_output_value")),
        "approximation_error": _number(attribution.get("approximation_error")),
    }


def _global_of(version: ModelVersion) -> dict[str, Any] | None:
    found = (version.manifest or {}).get("global_explanations")
    return found if isinstance(found, dict) else None


def global_rows(global_explanations: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The global explanations' top entries, largest first, each with its bar's share of the largest."""
    if not global_explanations:
        return []
    top = [
        {"feature": str(t.get("feature", "")), "value": _number(t.get("mean_abs_attribution")), "count": t.get("count")}
        for t in global_explanations.get("top") or []
        if isinstance(t, dict)
    ]
    top = sorted((t for t in top if t["value"] is not None), key=lambda t: -t["value"])[:50]
    largest = max((t["value"] for t in top), default=0.0) or 1.0
    for rank, row in enumerate(top, 1):
        row["rank"] = rank
        row["percent"] = round(100 * row["value"] / largest, 1)
    return top
