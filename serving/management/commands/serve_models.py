"""Run the serving process: TensorFlow Serving REST and KServe v2 on one port (uvicorn, one event loop)."""

from __future__ import annotations

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve predictions from the model registry (TF Serving REST and KServe v2)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8001)
        parser.add_argument(
            "--workers",
            type=int,
            default=1,
            help="processes; each keeps its own model cache and rate-limit buckets (one per core is typical)",
        )

    def handle(self, *args, host: str, port: int, workers: int, **options) -> None:
        import uvicorn

        # Imported when the command runs: the runtime's modules are the serving process's, not every manage.py's.
        from serving.runtime.metrics import require_token

        require_token()  # before any port opens: production never serves an open /metrics

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
