from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training jobs"

    def ready(self) -> None:
        from datasets import signals
        from training import services

        signals.deleting.connect(
            services.refuse_deleting_dataset_in_use, dispatch_uid="training.refuse_deleting_dataset_in_use"
        )
