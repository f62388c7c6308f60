import json
import uuid

from django.core.management.base import BaseCommand, CommandError

from core import probes


class Command(BaseCommand):
    help = "Send a probe task to a worker queue and print the worker's runtime report as JSON."

    def add_arguments(self, parser):
        parser.add_argument("--queue", default="default", choices=["default", "cpu", "gpu", "webhooks"])
        parser.add_argument("--timeout", type=float, default=60)
        parser.add_argument("--probe-id", default=None)

    def handle(self, *args, **options):
        probe_id = options["probe_id"] or uuid.uuid4().hex
        probes.send_probe(probe_id=probe_id, queue=options["queue"])
        try:
            report = probes.wait_for_probe(probe_id=probe_id, timeout=options["timeout"])
        except TimeoutError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(json.dumps(report))
