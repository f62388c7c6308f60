"""Compile published versions that have no compiled artifact, so ONNX Runtime serves them without TensorFlow."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from serving import publishing
from serving.models import ModelVersion
from training.compiled import compiled_files


class Command(BaseCommand):
    help = (
        "Compile ready model versions published before compiled serving (ONNX core + NumPy preprocessing), each "
        "checked by the parity gate against its SavedModel; versions that fail stay on TensorFlow, with the reason."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", help="only this tenant (slug)")
        parser.add_argument("--model", help="only this model name")
        parser.add_argument("--retry-failed", action="store_true", help="also versions whose gate failed before")
        parser.add_argument("--dry-run", action="store_true", help="list what would be compiled")

    def handle(self, *args, tenant: str | None, model: str | None, retry_failed: bool, dry_run: bool, **options):
        versions = ModelVersion.objects.filter(status=ModelVersion.Status.READY).select_related("model", "tenant")
        if tenant:
            versions = versions.filter(tenant__slug=tenant)
        if model:
            versions = versions.filter(model__name=model)
        compiled = failed = 0
        for version in versions.order_by("tenant__slug", "model__name", "version"):
            manifest = version.manifest or {}
            if compiled_files(manifest) or (manifest.get("runtime_reason") and not retry_failed):
                continue
            label = f"{version.tenant.slug}/{version.model.name}/{version.version}"
            if dry_run:
                self.stdout.write(f"{label}: would compile")
                continue
            fields = publishing.compile_published_version(version=version)
            if fields["runtime"] == "onnxruntime":
                compiled += 1
                self.stdout.write(f"{label}: onnxruntime (parity {fields['parity']['max_abs_difference']:.2g})")
            else:
                failed += 1
                self.stdout.write(f"{label}: tensorflow ({fields['runtime_reason']})")
        self.stdout.write(f"compiled {compiled}, left on TensorFlow {failed}")
