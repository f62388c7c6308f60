"""ASGI entry of the serving process (predictions), apart from the API's ``config.asgi``.

    uvicorn config.serving_asgi:application --host 127.0.0.1 --port 8001

``manage.py serve_models`` runs exactly this with the recommended options.
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
django.setup()

from serving.runtime.app import ServingApp  # noqa: E402 - needs django.setup() first
from serving.runtime.metrics import require_token  # noqa: E402

require_token()  # also when uvicorn is started on this module directly, not through serve_models
application = ServingApp()
