from django.core.management.base import BaseCommand, CommandError

from datasets.sample_data import KINDS, write_csv


class Command(BaseCommand):
    help = "Write a synthetic CSV dataset with a learnable signal (ctr, sentiment, intent or tabular)."

    def add_arguments(self, parser):
        parser.add_argument("--kind", required=True, choices=KINDS)
        parser.add_argument("--rows", type=int, default=10_000)
        parser.add_argument("--out", required=True, help="output CSV path, or - for stdout")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, **options):
        if options["rows"] < 1:
            raise CommandError("--rows must be at least 1")
        if options["out"] == "-":
            write_csv(options["kind"], options["rows"], self.stdout, seed=options["seed"])
            return
        with open(options["out"], "w", newline="", encoding="utf-8") as out:
            write_csv(options["kind"], options["rows"], out, seed=options["seed"])
        self.stderr.write(f"wrote {options['rows']} {options['kind']} rows to {options['out']}")
