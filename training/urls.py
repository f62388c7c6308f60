from django.urls import path
from rest_framework.routers import SimpleRouter

from training import views

router = SimpleRouter(trailing_slash=False)
router.register("jobs", views.TrainingJobViewSet, basename="job")

dataset_privacy = views.DatasetPrivacyViewSet.as_view({"get": "retrieve", "put": "update"})

urlpatterns = [
    path("templates", views.TemplateListView.as_view(), name="templates"),
    path("datasets/<uuid:pk>/privacy", dataset_privacy, name="dataset-privacy"),
    *router.urls,
]
