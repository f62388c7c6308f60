"""Forms of the dashboard; the job form is built from the template's JSON Schema and the dataset's columns."""

from __future__ import annotations

import uuid
from typing import Any

from django import forms

from core import naming
from events.models import EVENT_TYPES
from serving.models import ModelAlias
from tenants.models import Role, Scope
from training.templates import Template

PARAM_PREFIX = "param_"


class IntegerListField(forms.CharField):
    """A list of integers typed as "64, 32" (the schema's array-of-integers parameters)."""

    def to_python(self, value: Any) -> list[int]:
        text = super().to_python(value)
        try:
            return [int(part) for part in text.replace(",", " ").split()]
        except ValueError:
            raise forms.ValidationError("Whole numbers separated by commas.") from None

    def prepare_value(self, value: Any) -> Any:
        return ", ".join(str(v) for v in value) if isinstance(value, list | tuple) else value


def schema_field(spec: dict[str, Any]) -> forms.Field:
    """A form field for one JSON Schema property; the service checks the whole schema again."""
    common = {"help_text": spec.get("description", ""), "initial": spec.get("default")}
    kind = spec.get("type")
    if "enum" in spec:
        return forms.ChoiceField(choices=[(v, v) for v in spec["enum"]], **common)
    if kind == "integer":
        return forms.IntegerField(min_value=spec.get("minimum"), max_value=spec.get("maximum"), **common)
    if kind == "number":
        return forms.FloatField(min_value=spec.get("minimum"), max_value=spec.get("maximum"), **common)
    if kind == "boolean":
        return forms.BooleanField(required=False, **common)
    if kind == "array" and spec.get("items", {}).get("type") == "integer":
        return IntegerListField(max_length=200, **common)
    return forms.CharField(max_length=200, **common)


class JobForm(forms.Form):
    """What ``training.services.create_job`` takes, for one template and one dataset."""

    model_name = forms.RegexField(
        regex=naming.MODEL_NAME_RE,
        max_length=naming.MODEL_NAME_MAX_LENGTH,
        help_text="1-63 lowercase letters, digits, '-' or '_'; a new version is added if the model exists.",
    )
    label_column = forms.ChoiceField()
    feature_columns = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, help_text="None ticked: every usable column."
    )
    validation_split = forms.FloatField(min_value=0.05, max_value=0.5, initial=0.2, help_text="held-out share")
    seed = forms.IntegerField(min_value=0, max_value=2**31 - 1, initial=0)

    def __init__(self, *args: Any, template: Template, dataset, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        columns = template.columns
        schema = dataset.schema or []
        self.fields["label_column"].choices = [
            (c["name"], f"{c['name']} ({c['type']})") for c in schema if c["type"] in columns.label_types
        ]
        self.fields["label_column"].initial = dataset.label_column or None
        self.fields["feature_columns"].choices = [
            (c["name"], f"{c['name']} ({c['type']})") for c in schema if c["type"] in columns.feature_types
        ]
        for name, spec in template.params_schema["properties"].items():
            self.fields[PARAM_PREFIX + name] = schema_field(spec)
            self.fields[PARAM_PREFIX + name].label = name.replace("_", " ")

    def param_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.fields if name.startswith(PARAM_PREFIX)]

    def job_arguments(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "model_name": data["model_name"],
            "label_column": data["label_column"],
            "feature_columns": list(data["feature_columns"]),
            "validation_split": data["validation_split"],
            "seed": data["seed"],
            "params": {
                name.removeprefix(PARAM_PREFIX): value
                for name, value in data.items()
                if name.startswith(PARAM_PREFIX) and value is not None
            },
        }


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100)
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices, widget=forms.CheckboxSelectMultiple, initial=[Scope.READ, Scope.PREDICT]
    )
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)
    expires_in_days = forms.IntegerField(min_value=1, max_value=3650, required=False, help_text="Empty: never expires.")


class MemberForm(forms.Form):
    email = forms.EmailField(max_length=254)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class AliasForm(forms.Form):
    alias = forms.RegexField(
        regex=naming.ALIAS_NAME_RE, max_length=naming.MODEL_NAME_MAX_LENGTH, initial=ModelAlias.DEFAULT
    )
    version = forms.IntegerField(min_value=1, max_value=10**9)


class WebhookForm(forms.Form):
    url = forms.CharField(max_length=2048, label="URL", help_text="https; checked again before every delivery.")
    event_types = forms.MultipleChoiceField(
        choices=[(name, name) for name in sorted(EVENT_TYPES)],
        widget=forms.CheckboxSelectMultiple,
        initial=sorted(EVENT_TYPES),
        label="Events",
    )
    description = forms.CharField(max_length=200, required=False)


def form_error(form: forms.Form) -> str:
    """The first error of a form, as one sentence for the page's banner."""
    for field, errors in form.errors.items():
        label = form.fields[field].label or field if field in form.fields else ""
        prefix = f"{label}: " if field != "__all__" else ""
        return f"{prefix}{errors[0]}"
    return "Invalid input."


def row_id(raw: str | None) -> uuid.UUID | None:
    """A row id posted by a form, or None for anything that is not one (the caller answers 404)."""
    try:
        return uuid.UUID(raw or "")
    except ValueError:
        return None
