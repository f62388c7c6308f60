from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenants, members and API keys"

    def ready(self) -> None:
        from django.db.models.signals import pre_delete

        from tenants import schema  # noqa: F401 - registers the OpenAPI auth extension
        from tenants.models import User

        pre_delete.connect(
            _revoke_keys_of_deleted_user, sender=User, dispatch_uid="tenants.revoke_keys_of_deleted_user"
        )


def _revoke_keys_of_deleted_user(sender, instance, **kwargs) -> None:
    """Deleting a person cascades to their memberships outside the services, and would turn their keys into
    keys nobody made (``created_by`` becomes null): revoke those keys, and the keys they made, first."""
    from tenants import services

    services.revoke_keys_made_by(user=instance)
