from django.contrib.auth import views as auth_views
from django.urls import path

from dashboard.views import account, datasets, jobs, models, overview, webhooks

app_name = "dashboard"

urlpatterns = [
    path("", overview.OverviewPage.as_view(), name="overview"),
    path("login/", account.LoginPage.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("switch-tenant/", account.switch_tenant, name="switch-tenant"),
    path("datasets/", datasets.DatasetListPage.as_view(), name="datasets"),
    path("datasets/<uuid:dataset_id>/", datasets.DatasetDetailPage.as_view(), name="dataset"),
    path("jobs/", jobs.JobListPage.as_view(), name="jobs"),
    path("jobs/new/", jobs.JobNewPage.as_view(), name="job-new"),
    path("jobs/<uuid:job_id>/", jobs.JobDetailPage.as_view(), name="job"),
    path("models/", models.ModelListPage.as_view(), name="models"),
    path("models/<slug:name>/", models.ModelDetailPage.as_view(), name="model"),
    path("models/<slug:name>/try/", models.TryPredictionView.as_view(), name="model-try"),
    path("models/<slug:name>/versions/<int:version>/", models.VersionDetailPage.as_view(), name="version"),
    path(
        "models/<slug:name>/versions/<int:version>/download/",
        models.VersionDownloadView.as_view(),
        name="version-download",
    ),
    path("models/<slug:name>/export/", models.ModelExportView.as_view(), name="model-export"),
    path("api-keys/", account.ApiKeysPage.as_view(), name="api-keys"),
    path("members/", account.MembersPage.as_view(), name="members"),
    path("usage/", overview.UsagePage.as_view(), name="usage"),
    path("audit/", account.AuditPage.as_view(), name="audit"),
    path("webhooks/", webhooks.WebhooksPage.as_view(), name="webhooks"),
]
