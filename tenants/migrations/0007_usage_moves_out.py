"""Usage records left for the ``usage`` app: state only, the table stays."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0006_tenant_plan_history"),
        ("usage", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(
                    name="UsageRecord",
                ),
            ],
            database_operations=[],
        ),
    ]
