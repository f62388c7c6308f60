from django.urls import path
from rest_framework.routers import SimpleRouter

from tenants import views

router = SimpleRouter(trailing_slash=False)
router.register("members", views.MemberViewSet, basename="member")
router.register("api-keys", views.ApiKeyViewSet, basename="api-key")
router.register("audit", views.AuditEventViewSet, basename="audit-event")

urlpatterns = [
    path("tenant", views.CurrentTenantView.as_view(), name="current-tenant"),
    *router.urls,
]
