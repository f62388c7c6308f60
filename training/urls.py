from django.urls import path
from rest_framework.routers import SimpleRouter

from training import views

router = SimpleRouter(trailing_slash=False)
router.register("jobs", views.TrainingJobViewSet, basename="job")

urlpatterns = [path("templates", views.TemplateListView.as_view(), name="templates"), *router.urls]
