"""A private embedded stack for benchmarks: its own SeaweedFS, SQLite database and settings.

Nothing is shared with a developer's `make up` or the test suite; everything
started here is stopped by process id when the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))

from core.s3server import port_is_open, start_s3_server  # noqa: E402


@contextlib.contextmanager
def embedded_stack(*, s3_port: int, name: str):
    """Yields the environment (also applied to os.environ) with Django set up on it."""
    if port_is_open("127.0.0.1", s3_port):
        raise SystemExit(f"port {s3_port} is busy")
    (ROOT / "var").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"bench-{name}-", dir=ROOT / "var"))
    env = {
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DEBUG": "0",
        "SECRET_KEY": "bench-" + uuid.uuid4().hex,
        "PLATFORM_VAR_DIR": str(work / "var"),
        "DATABASE_URL": f"sqlite:///{work / 'db.sqlite3'}",
        "CELERY_BROKER_URL": "filesystem://",
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
        "S3_BUCKET": "bench",
        "S3_ACCESS_KEY_ID": "bench-access",
        "S3_SECRET_ACCESS_KEY": "bench-secret-" + uuid.uuid4().hex[:8],
        "ALLOWED_HOSTS": "127.0.0.1",
    }
    os.environ.update(env)
    s3 = start_s3_server(
        data_dir=work / "s3",
        access_key=env["S3_ACCESS_KEY_ID"],
        secret_key=env["S3_SECRET_ACCESS_KEY"],
        s3_port=s3_port,
    )
    try:
        import django

        django.setup()
        from django.core.management import call_command

        from core import storage

        call_command("migrate", verbosity=0)
        storage.ensure_bucket()
        yield dict(os.environ) | {"BENCH_WORK_DIR": str(work)}
    finally:
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)


def bench_tenant(name: str = "Bench"):
    """A tenant whose plan does not get in a benchmark's way; returns (tenant, raw API key)."""
    from tenants import services

    tenant, created = services.create_tenant(name=name, owner_email=f"{name.lower()}@example.com")
    plan = tenant.plan
    plan.max_dataset_bytes = plan.storage_bytes = 64 * 1024**3
    plan.compute_seconds_per_month = 10**9
    plan.max_concurrent_jobs = 100
    plan.save()
    return tenant, created.raw_key
