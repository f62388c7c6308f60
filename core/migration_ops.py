"""Migration operations shared by apps that take over another app's models."""

from __future__ import annotations

from django.db import migrations


def move_content_types(app_from: str, app_to: str, models: list[str]) -> migrations.RunPython:
    """Moves the content-type rows of models that changed apps, instead of letting Django make new ones.

    Admin log entries and permissions point at content types by id: moving the rows keeps them attached.
    """

    def move(apps, source: str, destination: str) -> None:
        content_types = apps.get_model("contenttypes", "ContentType")
        for model in models:
            if not content_types.objects.filter(app_label=destination, model=model).exists():
                content_types.objects.filter(app_label=source, model=model).update(app_label=destination)

    return migrations.RunPython(
        lambda apps, schema_editor: move(apps, app_from, app_to),
        lambda apps, schema_editor: move(apps, app_to, app_from),
    )
