import json

from django.core.management.base import BaseCommand, CommandError

from core.errors import ServiceError
from tenants import services
from tenants.models import Plan


class Command(BaseCommand):
    help = "Create a tenant with its owner and print its first API key (shown only once)."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--owner-email", required=True)
        parser.add_argument("--slug", help="unique slug (derived from the name when absent)")
        parser.add_argument("--plan", help="plan slug (the default plan when absent)")
        parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    def handle(self, *args, **options):
        plan = None
        if options["plan"]:
            plan = Plan.objects.filter(slug=options["plan"]).first()
            if plan is None:
                raise CommandError(f"no plan with slug {options['plan']!r}")
        try:
            tenant, created = services.create_tenant(
                name=options["name"], owner_email=options["owner_email"], slug=options["slug"], plan=plan
            )
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        if options["json"]:
            self.stdout.write(
                json.dumps({"tenant_id": str(tenant.id), "slug": tenant.slug, "api_key": created.raw_key})
            )
            return
        self.stdout.write(f"tenant {tenant.slug} ({tenant.id}) created")
        self.stdout.write(f"API key (shown once): {created.raw_key}")
