"""Write the canonical Parquet copy of every ready dataset validated before copies existed."""

from django.core.management.base import BaseCommand

from datasets import services
from datasets.models import Dataset


class Command(BaseCommand):
    help = (
        "Write the canonical copy (Parquet, read by previews and training) of ready datasets that have none; "
        "safe to run again."
    )

    def add_arguments(self, parser):
        parser.add_argument("--limit", type=int, default=0, help="at most this many datasets (0: all)")

    def handle(self, *args, **options):
        pending = Dataset.objects.filter(status=Dataset.Status.READY, canonical_key="").order_by("created_at")
        if options["limit"]:
            pending = pending[: options["limit"]]
        written = failed = 0
        for dataset in pending.iterator():
            try:
                written += services.write_canonical_copy(dataset=dataset)
            except Exception as exc:  # noqa: BLE001 - one unreadable dataset must not stop the others
                failed += 1
                self.stderr.write(f"dataset {dataset.id}: {type(exc).__name__}: {exc}")
        self.stdout.write(f"wrote {written} canonical copies; {failed} failed")
        if failed:
            raise SystemExit(1)
