from django.core.management.base import BaseCommand

from core import storage


class Command(BaseCommand):
    help = "Create the S3 bucket named by S3_BUCKET if it does not exist."

    def handle(self, *args, **options):
        storage.ensure_bucket()
        self.stdout.write(f"bucket {storage.bucket()} ready at {storage.client().meta.endpoint_url}")
