"""Run the serving process: TensorFlow Serving REST and KServe v2 on one port (uvicorn, one event loop each).

``--workers N`` starts N such processes on the same port, each with its own listening socket
(``SO_REUSEPORT``), so the kernel spreads connections evenly across them: with one shared socket, whichever
worker is awake first accepts a burst of keep-alive connections and keeps them, and the others idle. The
command supervises them: a signal is passed on to every worker, and a worker that dies is started again.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

RESTART_PAUSE_SECONDS = 1.0


def metrics_directory(port: int) -> Path:
    """The directory where the workers' metrics meet (prometheus_client's multiprocess mode), emptied of a
    previous run's files so its counters are not added to this one's.

    Set in the environment before the workers start, so each imports prometheus_client already in multiprocess
    mode. Only the metrics' own files are removed: an operator's ``PROMETHEUS_MULTIPROC_DIR`` may hold others.
    """
    # The serving runtime's module, imported when the command runs (not by every manage.py).
    from serving.runtime.metrics import SNAPSHOT_PREFIX

    directory = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or settings.VAR_DIR / "serving-metrics" / str(port))
    directory.mkdir(parents=True, exist_ok=True)
    for pattern in ("*.db", f"{SNAPSHOT_PREFIX}*.json"):
        for stale in directory.glob(pattern):
            stale.unlink(missing_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return directory


def listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


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
        parser.add_argument("--reuse-port", action="store_true", help="(set for the workers --workers starts)")

    def handle(self, *args, host: str, port: int, workers: int, reuse_port: bool, **options) -> None:
        # Imported when the command runs: the runtime's modules are the serving process's, not every manage.py's.
        from serving.runtime.metrics import require_token

        require_token()  # before any port opens: production never serves an open /metrics
        if workers > 1:
            metrics_directory(port)
            raise SystemExit(self.supervise(host, port, workers))
        self.serve(host, port, reuse_port=reuse_port)

    def serve(self, host: str, port: int, *, reuse_port: bool) -> None:
        import uvicorn

        config = uvicorn.Config(
            "config.serving_asgi:application",
            http="httptools",
            loop="uvloop",
            lifespan="on",
            access_log=False,  # serving.runtime.access writes its own, through the settings' LOGGING
            log_config=None,  # uvicorn's lines go to the root logger too (LOG_FORMAT=json holds for them)
            timeout_keep_alive=30,
            log_level="info",
        )
        config.load()  # the application first, so a worker's socket exists only once it can answer
        uvicorn.Server(config).run(sockets=[listening_socket(host, port, reuse_port=reuse_port)])

    def supervise(self, host: str, port: int, workers: int) -> int:
        """Start the workers, restart any that dies, and stop them all on SIGINT or SIGTERM."""
        command = [
            sys.executable,
            str(Path(settings.BASE_DIR) / "manage.py"),
            "serve_models",
            "--host",
            host,
            "--port",
            str(port),
            "--reuse-port",
        ]
        stopping: list[int] = []

        def stop(signum: int, frame: object) -> None:
            stopping.append(signum)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        # The command is this interpreter and manage.py with our own validated arguments: nothing from outside.
        running = [subprocess.Popen(command) for _ in range(workers)]  # noqa: S603
        self.stdout.write(f"serving on {host}:{port} with {workers} worker processes: {[p.pid for p in running]}")
        while not stopping:
            time.sleep(0.2)
            for index, process in enumerate(running):
                if process.poll() is not None and not stopping:
                    self.stderr.write(f"worker {process.pid} exited ({process.returncode}); starting another")
                    time.sleep(RESTART_PAUSE_SECONDS)
                    running[index] = subprocess.Popen(command)  # noqa: S603 - as above
        for process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in running:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        return 0
