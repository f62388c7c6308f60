from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Platform core"

    def ready(self) -> None:
        import logging

        logging.captureWarnings(True)  # Python warnings become log lines (JSON with LOG_FORMAT=json), not bare text
