"""Production settings: the base settings with nothing insecure left to chance."""

from config.env import env_bool, env_int, env_str
from config.settings.base import *  # noqa: F403

if DEBUG:  # noqa: F405
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("DEBUG must be off with config.settings.production (unset DEBUG).")

SECRET_KEY = env_str("SECRET_KEY")
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
# Probes (a container health check, a kubelet, a load balancer) speak plain HTTP to the process: never redirect.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SECURE = True
X_FRAME_OPTIONS = "DENY"

# The serving process's /metrics name models and versions: it refuses to start without a scrape token here
# (serving.runtime.metrics.require_token, checked by ``manage.py serve_models`` and the serving ASGI entry).
SERVING_METRICS_TOKEN_REQUIRED = True

# The API's /metrics (and each worker's metrics port) name routes, tasks and queues: never open in production
# (core.metrics.require_token, checked when the API's middleware loads and when a worker opens its port).
METRICS_TOKEN_REQUIRED = True
