import json

from django.http import QueryDict
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

# JSON types each field kind accepts in a JSON body (forms send strings, and are checked by the fields).
_JSON_TYPES: list[tuple[type[serializers.Field], tuple[type, ...], str]] = [
    (serializers.MultipleChoiceField, (list,), "a list"),
    (serializers.BooleanField, (bool,), "a boolean"),
    (serializers.IntegerField, (int,), "an integer"),
    (serializers.FloatField, (int, float), "a number"),
    (serializers.DecimalField, (int, float, str), "a number"),
    (serializers.ChoiceField, (str,), "a string"),
    (serializers.CharField, (str,), "a string"),
    (serializers.UUIDField, (str,), "a string"),
    (serializers.DateTimeField, (str,), "a string"),
    (serializers.ListField, (list,), "a list"),
]


def _type_error(field: serializers.Field, value) -> str | None:
    """Why a JSON value has the wrong type for ``field`` (DRF would coerce 5 to "5" or "1" to 1), or None."""
    if value is None:
        return None  # the field's own allow_null decides
    for kind, accepted, name in _JSON_TYPES:
        if isinstance(field, kind):
            wrong_bool = isinstance(value, bool) and bool not in accepted
            return f"Must be {name}." if wrong_bool or not isinstance(value, accepted) else None
    return None


class StrictInputSerializer(serializers.Serializer):
    """An input serializer that refuses fields it does not know (typos fail loudly) and, in JSON, wrong types."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        if not isinstance(data, QueryDict):
            wrong = {name: _type_error(self.fields[name], value) for name, value in data.items()}
            wrong = {name: [message] for name, message in wrong.items() if message}
            if wrong:
                raise serializers.ValidationError(wrong)
        return super().to_internal_value(data)


def validated_input(serializer_class: type[serializers.Serializer], request) -> dict:
    """Validate ``request.data`` with an input serializer; a 400 envelope on failure."""
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


@extend_schema_field({"type": "object", "additionalProperties": True})
class JsonObjectField(serializers.Field):
    """An object given either as JSON (in a JSON body) or as a JSON string (in a multipart form)."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            try:
                data = json.loads(data) if data.strip() else {}
            except (json.JSONDecodeError, RecursionError):
                raise serializers.ValidationError("Must be a JSON object.") from None
        if not isinstance(data, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        return data

    def to_representation(self, value):
        return value
