from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from core import health
from usage import admin_views

urlpatterns = [
    path("admin/status/", admin.site.admin_view(admin_views.platform_status), name="platform-status"),
    path("admin/usage/", admin.site.admin_view(admin_views.monthly_usage), name="monthly-usage"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("tenants.urls")),
    path("api/v1/", include("events.urls")),
    path("api/v1/", include("datasets.urls")),
    path("api/v1/", include("training.urls")),
    path("api/v1/", include("serving.urls")),
    path("api/v1/", include("usage.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("", include("dashboard.urls")),
]

handler400 = "core.errors.handler400"
handler403 = "core.errors.handler403"
handler404 = "core.errors.handler404"
handler500 = "core.errors.handler500"
