"""Run the serving process: TensorFlow Serving REST and KServe v2 on one port (uvicorn, one event loop)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand


def metrics_directory(port: int) -> Path:
    """A fresh directory where the workers' metrics meet (prometheus_client's multiprocess mode).

    Set in the environment before uvicorn starts the workers, so each imports prometheus_client already in
    multiprocess mode; wiped first, so a previous run's counters are not added to this one's.
    """
    directory = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or settings.VAR_DIR / "serving-metrics" / str(port))
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return directory


class Command(BaseCommand):
    help = "Serve predictions from the model registry (TF Serving REST and KServe v2)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8001)
        parser.add_argument(
            "--workers",
            type=int,
            default=1,
            help="processes on one port; each keeps its own model cache, /metrics adds up all of them (one per core)",
        )

    def handle(self, *args, host: str, port: int, workers: int, **options) -> None:
        import uvicorn

        # Imported when the command runs: the runtime's modules are the serving process's, not every manage.py's.
        from serving.runtime.metrics import require_token

        require_token()  # before any port opens: production never serves an open /metrics
        if workers > 1:
            metrics_directory(port)

        uvicorn.run(
            "config.serving_asgi:application",
            host=host,
            port=port,
            workers=workers,
            http="httptools",
            loop="uvloop",
            lifespan="on",
            access_log=False,
            timeout_keep_alive=30,
            log_level="info",
        )
