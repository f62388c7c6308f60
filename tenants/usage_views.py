"""Usage, billing estimate and quotas of the caller's tenant (read-only)."""

from __future__ import annotations

from datetime import date, timedelta

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from core.serializers import StrictInputSerializer
from tenants import selectors
from tenants.scoping import TenantScopedAPIView

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
    month = serializers.RegexField(r"^\d{4}-(0[1-9]|1[0-2])$", required=False)

    def validate(self, attrs):
        raw = attrs.get("month")
        return {"month": date(int(raw[:4]), int(raw[5:]), 1) if raw else timezone.now().date().replace(day=1)}


def _query(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.query_params.dict())
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class UsageView(TenantScopedAPIView):
    """Aggregated daily usage (compute seconds by device, storage byte-days, predictions per model version)."""

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
    """The month's line items and total from its usage and the plan's prices."""

    @extend_schema(
        parameters=[OpenApiParameter("month", str, description="YYYY-MM (default: this month)")],
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
