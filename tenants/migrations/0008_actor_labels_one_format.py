"""Audit rows written before actors had one format: ``api-key:<prefix>`` becomes ``api_key:<prefix>`` and a
person's bare email becomes ``user:<email>``, as ``tenants.audit.Actor`` writes them now."""

from django.db import migrations, models
from django.db.models import F, Value
from django.db.models.functions import Concat, Substr


def forwards(apps, schema_editor):
    events = apps.get_model("tenants", "AuditEvent").objects
    events.filter(actor_kind="api_key", actor_label__startswith="api-key:").update(
        actor_label=Concat(Value("api_key:"), Substr("actor_label", len("api-key:") + 1))
    )
    events.filter(actor_kind="user").exclude(actor_label__startswith="user:").update(
        actor_label=Concat(Value("user:"), F("actor_label"))
    )


def backwards(apps, schema_editor):
    events = apps.get_model("tenants", "AuditEvent").objects
    events.filter(actor_kind="api_key", actor_label__startswith="api_key:").update(
        actor_label=Concat(Value("api-key:"), Substr("actor_label", len("api_key:") + 1))
    )
    events.filter(actor_kind="user", actor_label__startswith="user:").update(
        actor_label=Substr("actor_label", len("user:") + 1)
    )


class Migration(migrations.Migration):
    dependencies = [("tenants", "0007_usage_moves_out")]

    operations = [
        migrations.AlterField(model_name="auditevent", name="actor_label", field=models.CharField(max_length=300)),
        migrations.RunPython(forwards, backwards),
    ]
