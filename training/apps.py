from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training jobs"

    def ready(self) -> None:
        # Imported here, once the app registry is ready (services import the models).
        from datasets import signals
        from training import metrics, services

        signals.deleting.connect(
            services.refuse_deleting_dataset_in_use, dispatch_uid="training.refuse_deleting_dataset_in_use"
        )
        metrics.register()  # jobs by state on the API's /metrics
