#!/bin/sh
# Container entry point: the command to run follows (web, worker, beat).
set -eu
python - <<'PY'
import os, time, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
django.setup()
from django.db import connection
for attempt in range(60):
    try:
        connection.ensure_connection()
        break
    except Exception as exc:
        print(f"waiting for the database: {exc}", flush=True)
        time.sleep(2)
else:
    raise SystemExit("database unreachable (DATABASE_URL)")
PY
if [ "${RUN_MIGRATIONS:-0}" = "1" ]; then
  python manage.py migrate --noinput
  python manage.py init_storage
fi
exec "$@"
