from rest_framework.routers import SimpleRouter

from datasets import views

router = SimpleRouter(trailing_slash=False)
# Registered before datasets so that "datasets/uploads" is not read as a dataset id.
router.register("datasets/uploads", views.DatasetUploadViewSet, basename="dataset-upload")
router.register("datasets", views.DatasetViewSet, basename="dataset")

urlpatterns = router.urls
