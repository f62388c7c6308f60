from django.urls import path

from usage import views

urlpatterns = [
    path("usage", views.UsageView.as_view(), name="usage"),
    path("billing/estimate", views.BillingEstimateView.as_view(), name="billing-estimate"),
    path("quotas", views.QuotasView.as_view(), name="quotas"),
]
