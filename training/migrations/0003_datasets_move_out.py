"""Datasets left for the ``datasets`` app: state only (the job's key now points at ``datasets.Dataset``, same table)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("datasets", "0001_initial"),
        ("training", "0002_attempts_runtime_budget"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="trainingjob",
                    name="dataset",
                    field=models.ForeignKey(
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="jobs",
                        to="datasets.dataset",
                    ),
                ),
                migrations.RemoveField(
                    model_name="datasetupload",
                    name="dataset",
                ),
                migrations.RemoveField(
                    model_name="datasetupload",
                    name="tenant",
                ),
                migrations.DeleteModel(
                    name="Dataset",
                ),
                migrations.DeleteModel(
                    name="DatasetUpload",
                ),
            ],
            database_operations=[],
        ),
    ]
