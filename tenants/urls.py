from django.urls import path
from rest_framework.routers import SimpleRouter

from tenants import usage_views, views

router = SimpleRouter(trailing_slash=False)
router.register("members", views.MemberViewSet, basename="member")
router.register("api-keys", views.ApiKeyViewSet, basename="api-key")
router.register("audit", views.AuditEventViewSet, basename="audit-event")

urlpatterns = [
    path("tenant", views.CurrentTenantView.as_view(), name="current-tenant"),
    path("usage", usage_views.UsageView.as_view(), name="usage"),
    path("billing/estimate", usage_views.BillingEstimateView.as_view(), name="billing-estimate"),
    path("quotas", usage_views.QuotasView.as_view(), name="quotas"),
    *router.urls,
]
