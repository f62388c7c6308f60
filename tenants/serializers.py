from rest_framework import serializers

from core.serializers import StrictInputSerializer
from tenants.models import PLAN_FIELDS, ApiKey, AuditEvent, Membership, Plan, Role, Scope, Tenant


class PlanSerializer(serializers.ModelSerializer):
    class Meta:
        model = Plan
        fields = list(PLAN_FIELDS)


class TenantSerializer(serializers.ModelSerializer):
    plan = PlanSerializer()

    class Meta:
        model = Tenant
        fields = ["id", "name", "slug", "status", "plan", "created_at"]


class MembershipSerializer(serializers.ModelSerializer):
    email = serializers.EmailField(source="user.email")

    class Meta:
        model = Membership
        fields = ["id", "email", "role", "created_at"]


class MemberCreateSerializer(StrictInputSerializer):
    email = serializers.EmailField(max_length=254)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)


class MemberUpdateSerializer(StrictInputSerializer):
    role = serializers.ChoiceField(choices=Role.choices)


class ApiKeySerializer(serializers.ModelSerializer):
    created_by = serializers.EmailField(
        source="created_by.email",
        read_only=True,
        allow_null=True,
        default=None,
        help_text="The email of the person who made the key (null when a key or an operator made it).",
    )
    parent = serializers.CharField(
        source="parent.prefix",
        read_only=True,
        allow_null=True,
        default=None,
        help_text="The prefix of the key that made this key (null when a person or an operator made it).",
    )

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "prefix",
            "scopes",
            "role",
            "created_by",
            "parent",
            "created_at",
            "expires_at",
            "revoked_at",
            "last_used_at",
        ]


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(help_text="The secret key. It is shown only in this response.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]


class ApiKeyCreateSerializer(StrictInputSerializer):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=Scope.choices), min_length=1, max_length=len(Scope.choices)
    )
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)


class CallerSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["api_key", "user"])
    role = serializers.CharField()
    scopes = serializers.ListField(child=serializers.CharField())
    api_key = ApiKeySerializer(required=False)
    email = serializers.EmailField(required=False)


class CurrentTenantSerializer(serializers.Serializer):
    tenant = TenantSerializer()
    caller = CallerSerializer()


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "created_at",
            "action",
            "target_type",
            "target_id",
            "actor_kind",
            "actor_label",
            "request_id",
            "details",
        ]
