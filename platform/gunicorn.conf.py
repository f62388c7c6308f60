"""gunicorn settings for the API (``gunicorn -c platform/gunicorn.conf.py config.wsgi``)."""

import multiprocessing
import os
import socket

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count() * 2 + 1))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))  # dataset uploads stream for a while
graceful_timeout = 30
keepalive = 5
max_requests = 2000
max_requests_jitter = 200
accesslog = None  # the application logs each request (api.access) with its request id, tenant and route
errorlog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

# --- Metrics across workers (core.metrics) -------------------------------------------------------------------
# Every worker writes its request counts to one directory (prometheus_client's multiprocess mode) and a scrape
# of any worker's /metrics adds up all of them. Named here, in the master, before any worker imports
# prometheus_client; one directory per host and bind address, emptied when the server starts (not on a reload).
_var_dir = os.environ.get("PLATFORM_VAR_DIR") or os.path.join(os.path.dirname(os.path.dirname(__file__)), "var")
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.path.join(
    _var_dir, "api-metrics", socket.gethostname() + "-" + "".join(c if c.isalnum() else "_" for c in bind)
)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir


def on_starting(server):
    os.makedirs(_metrics_dir, exist_ok=True)
    for name in os.listdir(_metrics_dir):
        if name.endswith(".db"):
            os.unlink(os.path.join(_metrics_dir, name))


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # a live gauge of a worker that exited is dropped


# --- JSON logs for gunicorn's own lines (LOG_FORMAT=json, as the application's) --------------------------------
if os.environ.get("LOG_FORMAT", "plain").strip().lower() == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "core.logs.JsonFormatter"}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
            "error_console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
        },
        "root": {"level": "INFO", "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            # The application writes the access lines (api.access): none from gunicorn.
            "gunicorn.access": {"level": "WARNING", "handlers": ["console"], "propagate": False},
        },
    }
