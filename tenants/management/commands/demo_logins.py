import json
import secrets

from django.core.management.base import BaseCommand

from tenants.models import User


class Command(BaseCommand):
    help = (
        "Give the demo owner a dashboard password and make an operator (superuser) for the admin console; "
        "prints both logins. For the embedded stack on loopback (`make up`), never for a shared deployment."
    )

    def add_arguments(self, parser):
        parser.add_argument("--owner-email", default="demo@example.com")
        parser.add_argument("--operator-email", default="operator@example.com")
        parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    def handle(self, *args, **options):
        password = secrets.token_urlsafe(12)
        owner = User.objects.filter(email=options["owner_email"]).first()
        if owner is None:
            owner = User.objects.create_user(options["owner_email"])
        owner.set_password(password)
        owner.save(update_fields=["password"])
        operator = User.objects.filter(email=options["operator_email"]).first()
        if operator is None:
            operator = User.objects.create_superuser(options["operator_email"], password)
        else:
            operator.is_staff = operator.is_superuser = True
            operator.set_password(password)
            operator.save(update_fields=["password", "is_staff", "is_superuser"])
        logins = {"owner": owner.email, "operator": operator.email, "password": password}
        if options["json"]:
            self.stdout.write(json.dumps(logins))
            return
        self.stdout.write(f"dashboard: {owner.email} / {password}")
        self.stdout.write(f"admin:     {operator.email} / {password}")
