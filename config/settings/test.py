"""Settings for the test suite: the base settings with test-only defaults.

Environment variables still win, so CI runs the same suite on PostgreSQL
and Redis or RabbitMQ by setting DATABASE_URL and CELERY_BROKER_URL.
"""

import os
from pathlib import Path

_BASE_DIR = Path(__file__).resolve().parent.parent.parent
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-any-real-deployment")
os.environ.setdefault("PLATFORM_VAR_DIR", str(_BASE_DIR / "var" / "test"))
# Its own S3 port and bucket, so tests never touch a running `make up` stack.
os.environ.setdefault("S3_ENDPOINT_URL", "http://127.0.0.1:18333")
os.environ.setdefault("S3_BUCKET", "mlplatform-test")
# Tests make many failed key checks from 127.0.0.1 on purpose; the throttle tests lower this themselves.
os.environ.setdefault("AUTH_FAILURES_PER_MINUTE", "100000")
# The webhook tests' receiver listens on 127.0.0.1 over http; the SSRF tests turn this off themselves.
os.environ.setdefault("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "1")
os.environ.setdefault("WEBHOOK_ALLOW_HTTP", "1")

from config.settings.base import *  # noqa: E402, F403
from config.settings.base import DATABASES, VAR_DIR  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory, so worker processes started by tests see the same database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
