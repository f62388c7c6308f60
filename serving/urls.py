from rest_framework.routers import SimpleRouter

from serving import views

router = SimpleRouter(trailing_slash=False)
router.register(
    rf"models/(?P<model_name>{views.MODEL_NAME})/versions", views.ModelVersionViewSet, basename="model-version"
)
router.register("models", views.RegisteredModelViewSet, basename="model")

urlpatterns = router.urls
