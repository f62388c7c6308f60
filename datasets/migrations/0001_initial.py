"""Datasets move here from ``training``: state only, the tables keep their names (``training_dataset``,
``training_datasetupload``) and their rows."""

import django.db.models.deletion
import django.utils.timezone
import uuid
from django.db import migrations, models

from core.migration_ops import move_content_types


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('tenants', '0006_tenant_plan_history'),
        ('training', '0002_attempts_runtime_budget'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Dataset',
                    fields=[
                        ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                        ('name', models.CharField(max_length=100)),
                        ('version', models.PositiveIntegerField()),
                        ('format', models.CharField(choices=[('csv', 'CSV'), ('parquet', 'Parquet'), ('jsonl', 'JSON lines')], max_length=16)),
                        ('status', models.CharField(choices=[('uploading', 'Uploading'), ('validating', 'Validating'), ('ready', 'Ready'), ('invalid', 'Invalid')], db_index=True, default='validating', max_length=16)),
                        ('object_key', models.CharField(blank=True, max_length=512)),
                        ('original_filename', models.CharField(blank=True, max_length=255)),
                        ('size_bytes', models.PositiveBigIntegerField(default=0)),
                        ('sha256', models.CharField(blank=True, db_index=True, max_length=64)),
                        ('label_column', models.CharField(blank=True, max_length=200)),
                        ('column_tags', models.JSONField(blank=True, default=dict)),
                        ('pii_mode', models.CharField(choices=[('hash', 'Replace with a keyed hash'), ('drop', 'Drop the column')], default='hash', max_length=8)),
                        ('schema', models.JSONField(blank=True, default=list)),
                        ('stats', models.JSONField(blank=True, default=dict)),
                        ('row_count', models.PositiveBigIntegerField(blank=True, null=True)),
                        ('errors', models.JSONField(blank=True, default=list)),
                        ('created_at', models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                        ('validated_at', models.DateTimeField(blank=True, null=True)),
                        ('duplicate_of', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='datasets.dataset')),
                        ('tenant', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='%(app_label)s_%(class)s_set', to='tenants.tenant')),
                    ],
                    options={
                        'db_table': 'training_dataset',
                        'ordering': ['-created_at'],
                    },
                ),
                migrations.CreateModel(
                    name='DatasetUpload',
                    fields=[
                        ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                        ('s3_upload_id', models.CharField(max_length=1024)),
                        ('declared_size', models.PositiveBigIntegerField()),
                        ('part_size', models.PositiveBigIntegerField()),
                        ('status', models.CharField(choices=[('pending', 'Pending'), ('completed', 'Completed'), ('aborted', 'Aborted')], db_index=True, default='pending', max_length=16)),
                        ('created_at', models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                        ('expires_at', models.DateTimeField()),
                        ('dataset', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='upload', to='datasets.dataset')),
                        ('tenant', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='%(app_label)s_%(class)s_set', to='tenants.tenant')),
                    ],
                    options={
                        'db_table': 'training_datasetupload',
                        'ordering': ['-created_at'],
                    },
                ),
                migrations.AddIndex(
                    model_name='dataset',
                    index=models.Index(fields=['tenant', 'name', '-version'], name='training_da_tenant__f15344_idx'),
                ),
                migrations.AddConstraint(
                    model_name='dataset',
                    constraint=models.UniqueConstraint(fields=('tenant', 'name', 'version'), name='one_dataset_version_per_name'),
                ),
            ],
            database_operations=[],
        ),
        move_content_types("training", "datasets", ["dataset", "datasetupload"]),
    ]
