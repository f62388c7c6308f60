from decimal import Decimal

from django.db import migrations, models


class Migration(migrations.Migration):
    """Explanations are priced apart from predictions; every plan and past price row gets the default price."""

    dependencies = [
        ("tenants", "0008_actor_labels_one_format"),
    ]

    operations = [
        migrations.AddField(
            model_name="plan",
            name="price_per_1k_explanations",
            field=models.DecimalField(decimal_places=4, default=Decimal("2.5000"), max_digits=12),
        ),
        migrations.AddField(
            model_name="planprice",
            name="price_per_1k_explanations",
            field=models.DecimalField(decimal_places=4, default=Decimal("2.5000"), max_digits=12),
            preserve_default=False,
        ),
    ]
