from django.apps import AppConfig


class ServingConfig(AppConfig):
    name = "serving"
    verbose_name = "Model registry and serving"

    def ready(self) -> None:
        # Imported here, once the app registry is ready (publishing imports the models).
        from serving import publishing
        from training import publishing as training_publishing

        training_publishing.bind(publishing)
