"""Usage, billing estimate and quotas of the caller's tenant (read-only)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from core.errors import ServiceError
from core.serializers import StrictInputSerializer
from tenants.scoping import TenantScopedAPIView
from usage import billing, selectors

MAX_RANGE_DAYS = 366


class UsageQuerySerializer(StrictInputSerializer):
    # "from" is a Python keyword: the field is declared under its wire name below.
    to = serializers.DateField(required=False)
    group_by = serializers.ChoiceField(choices=["day", "model", "kind"], default="day")

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = serializers.DateField(required=False)
        return fields

    def validate(self, attrs):
        today = timezone.now().date()
        start, end = attrs.get("from") or today.replace(day=1), attrs.get("to") or today
        if start > end:
            raise serializers.ValidationError({"from": ["Must not be after 'to'."]})
        if end - start > timedelta(days=MAX_RANGE_DAYS):
            raise serializers.ValidationError({"to": [f"At most {MAX_RANGE_DAYS} days per query."]})
        return {"start": start, "end": end, "group_by": attrs["group_by"]}


class MonthQuerySerializer(StrictInputSerializer):
    # Parsed by billing.parse_month, not a regex here: "\d" and int() accept any Unicode digit, and a year
    # such as 0000 matched the pattern but is no date (that was a 500).
    month = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)

    def validate(self, attrs):
        if "month" not in attrs:
            return {"month": timezone.now().date().replace(day=1)}
        try:
            return {"month": billing.parse_month(attrs["month"])}
        except billing.InvalidMonth as exc:
            raise ServiceError(
                f"Invalid month {attrs['month'][:20]!r}: {exc}",
                code="invalid_month",
                details={"month": [str(exc)], "min": f"{billing.MIN_YEAR}-01", "max": f"{billing.MAX_YEAR}-12"},
            ) from None


def _query(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.query_params.dict())
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class UsageView(TenantScopedAPIView):
    """Aggregated daily usage (compute seconds by device, storage byte-days, predictions and explanations per model
    version)."""

    @extend_schema(
        parameters=[
            OpenApiParameter("from", OpenApiTypes.DATE, description="first day (default: the month's first)"),
            OpenApiParameter("to", OpenApiTypes.DATE, description="last day, inclusive (default: today)"),
            OpenApiParameter("group_by", str, enum=["day", "model", "kind"]),
        ],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request):
        query = _query(UsageQuerySerializer, request)
        rows = selectors.usage(tenant=self.caller.tenant, **query)
        return Response({"from": query["start"], "to": query["end"], "group_by": query["group_by"], "results": rows})


class BillingEstimateView(TenantScopedAPIView):
    """The month's line items and total: each day's usage at the plan's prices in force that day."""

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "month",
                str,
                description=f"YYYY-MM, {billing.MIN_YEAR}-01 to {billing.MAX_YEAR}-12 (default: this month); "
                "anything else is a 400 with code invalid_month",
            )
        ],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request):
        query = _query(MonthQuerySerializer, request)
        return Response(selectors.billing_estimate(tenant=self.caller.tenant, month=query["month"]))


class QuotasView(TenantScopedAPIView):
    """Each plan limit beside the tenant's current use of it."""

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request):
        return Response(selectors.quota_use(tenant=self.caller.tenant))
