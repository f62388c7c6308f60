import json
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from core.errors import ServiceError
from tenants import services
from tenants.models import Role, Tenant


class Command(BaseCommand):
    help = "Create another API key for a tenant and print it (shown only once)."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="tenant slug")
        parser.add_argument("--scopes", default="read,write,predict", help="comma-separated: read,write,predict")
        parser.add_argument("--role", default=Role.MEMBER, choices=Role.values)
        parser.add_argument("--name", default="cli")
        parser.add_argument("--expires-in-days", type=int)
        parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    def handle(self, *args, **options):
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"no tenant with slug {options['tenant']!r}")
        days = options["expires_in_days"]
        expires_at = timezone.now() + timedelta(days=days) if days else None
        scopes = [s.strip() for s in options["scopes"].split(",") if s.strip()]
        try:
            created = services.create_api_key(
                tenant=tenant,
                name=options["name"],
                scopes=scopes,
                role=options["role"],
                acting_role=Role.OWNER,  # operators act with full rights
                expires_at=expires_at,
            )
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        key = created.api_key
        if options["json"]:
            payload = {"tenant_id": str(tenant.id), "slug": tenant.slug, "api_key": created.raw_key, "id": str(key.id)}
            self.stdout.write(json.dumps(payload | {"scopes": key.scopes}))
            return
        self.stdout.write(f"API key {key.prefix} for {tenant.slug} with scopes {','.join(key.scopes)} (shown once):")
        self.stdout.write(created.raw_key)
