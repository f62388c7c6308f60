"""Usage records move here from ``tenants``: state only, the table keeps its name (``tenants_usagerecord``) and rows."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

from core.migration_ops import move_content_types


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('tenants', '0006_tenant_plan_history'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='UsageRecord',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('day', models.DateField(db_index=True)),
                        ('kind', models.CharField(choices=[('gpu_seconds', 'GPU seconds'), ('cpu_seconds', 'CPU seconds'), ('storage_byte_days', 'Storage byte-days'), ('predictions', 'Predictions')], max_length=32)),
                        ('model_name', models.CharField(blank=True, max_length=63)),
                        ('version', models.PositiveIntegerField(blank=True, null=True)),
                        ('quantity', models.DecimalField(decimal_places=3, max_digits=24)),
                        ('updated_at', models.DateTimeField(default=django.utils.timezone.now)),
                        ('tenant', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='%(app_label)s_%(class)s_set', to='tenants.tenant')),
                    ],
                    options={
                        'db_table': 'tenants_usagerecord',
                        'ordering': ['day', 'kind', 'model_name', 'version'],
                        'constraints': [models.UniqueConstraint(fields=('tenant', 'day', 'kind', 'model_name', 'version'), name='one_usage_record_per_day_kind_model')],
                    },
                ),
            ],
            database_operations=[],
        ),
        move_content_types("tenants", "usage", ["usagerecord"]),
    ]
