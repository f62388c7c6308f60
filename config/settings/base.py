"""Settings for every environment, read from environment variables.

With no variables set (and ``DEBUG=1``) the platform runs on its embedded
defaults: SQLite, Celery's filesystem transport and a local SeaweedFS S3
server. Every variable is documented in README.md and ``.env.example``.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

from config.env import env_bool, env_float, env_int, env_list, env_str, env_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent
# Embedded state (SQLite file, broker folders, S3 data) lives here by default.
VAR_DIR = Path(env_str("PLATFORM_VAR_DIR", str(BASE_DIR / "var"))).resolve()

DEBUG = env_bool("DEBUG", False)
if DEBUG:
    SECRET_KEY = env_str("SECRET_KEY", "insecure-development-key-never-use-in-production")
else:
    SECRET_KEY = env_str("SECRET_KEY")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "core",
    "tenants",
    "events",
    "datasets",
    "training",
    "serving",
    "usage",
    "dashboard",
]

MIDDLEWARE = [
    "core.middleware.ProbeMiddleware",  # probes answer whatever their Host (before host validation)
    "core.metrics.MetricsMiddleware",  # times every request; answers /metrics before host checks and redirects
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "core.middleware.RequestIdMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "tenants.middleware.AdminAuditActorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "dashboard.middleware.DashboardSecurityHeadersMiddleware",
]

# Failed API-key checks and sign-ins allowed per client address per minute (then 429 until the minute ends).
AUTH_FAILURES_PER_MINUTE = env_int("AUTH_FAILURES_PER_MINUTE", 30, minimum=1)
# The cache holds those counts; "redis://…" shares them between processes (default: each process its own).
CACHE_URL = env_url("CACHE_URL", "locmem://", schemes={"locmem", "redis", "rediss"})
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "platform"}
        if CACHE_URL.startswith("locmem")
        else {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
    )
}

ROOT_URLCONF = "config.urls"
LOGIN_URL = "dashboard:login"
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "dashboard:login"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------
DATABASE_URL = env_url(
    "DATABASE_URL",
    f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
    schemes={"sqlite", "postgres", "postgresql", "pgsql"},
)
try:
    _database = dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
if _database["ENGINE"] == "django.db.backends.sqlite3":
    _database["CONN_MAX_AGE"] = 0
    # Several processes (API, worker) share the file: wait for locks instead of failing.
    # IMMEDIATE transactions take the write lock up front: no "database is locked" from lock upgrades.
    _database["OPTIONS"] = {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE"}
    Path(_database["NAME"]).parent.mkdir(parents=True, exist_ok=True)
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "tenants.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True  # serve admin/docs assets without collectstatic in development

# --- Object storage (S3 over boto3; SeaweedFS locally) ----------------------
S3_ENDPOINT_URL = env_url("S3_ENDPOINT_URL", "http://127.0.0.1:8333", schemes={"http", "https"})
# Where tenants reach S3 for presigned URLs (uploads' parts, model downloads) when the platform's own address
# is a private name (``http://s3:8333`` in docker-compose); empty: the same as S3_ENDPOINT_URL.
S3_PUBLIC_ENDPOINT_URL = S3_ENDPOINT_URL
if env_str("S3_PUBLIC_ENDPOINT_URL", ""):
    S3_PUBLIC_ENDPOINT_URL = env_url("S3_PUBLIC_ENDPOINT_URL", schemes={"http", "https"})
S3_BUCKET = env_str("S3_BUCKET", "mlplatform")
S3_ACCESS_KEY_ID = env_str("S3_ACCESS_KEY_ID", "platform-dev-access-key")
S3_SECRET_ACCESS_KEY = env_str("S3_SECRET_ACCESS_KEY", "platform-dev-secret-key")
S3_REGION = env_str("S3_REGION", "us-east-1")
# Ask the server to encrypt objects at rest ("" = off; "AES256" or "aws:kms").
S3_SERVER_SIDE_ENCRYPTION = env_str("S3_SERVER_SIDE_ENCRYPTION", "")
S3_PRESIGNED_URL_TTL_SECONDS = env_int("S3_PRESIGNED_URL_TTL_SECONDS", 3600, minimum=60)

# --- Celery -----------------------------------------------------------------
CELERY_BROKER_URL = env_url(
    "CELERY_BROKER_URL",
    "filesystem://",
    schemes={"filesystem", "redis", "rediss", "amqp", "amqps", "pyamqp", "memory"},
)
# The longest training run we allow; the broker must not redeliver a task sooner.
TRAINING_TIME_LIMIT_SECONDS = env_int("TRAINING_TIME_LIMIT_SECONDS", 6 * 3600, minimum=60)
_visibility_timeout = TRAINING_TIME_LIMIT_SECONDS + 3600

if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),  # else kombu writes ./control in the working directory
        "store_processed": False,
    }
elif CELERY_BROKER_URL.startswith(("redis", "rediss")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": _visibility_timeout}
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {}

CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True  # job state lives in the database, not a result backend
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_TIME_LIMIT = 15 * 60  # housekeeping and validation; training overrides per task
CELERY_TASK_SOFT_TIME_LIMIT = 14 * 60
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_CREATE_MISSING_QUEUES = False
CELERY_TASK_QUEUES = [
    Queue("default", Exchange("default"), routing_key="default"),
    Queue("cpu", Exchange("cpu"), routing_key="cpu"),
    Queue("gpu", Exchange("gpu"), routing_key="gpu"),
    Queue("webhooks", Exchange("webhooks"), routing_key="webhooks"),
]
# Explicit routing: training on GPU workers; validation, evaluation and housekeeping on CPU; webhook deliveries on
# a worker of their own (many threads: they wait on tenants' receivers, which must never hold up the CPU queue).
CELERY_TASK_ROUTES = {
    "training.tasks.train_*": {"queue": "gpu", "routing_key": "gpu"},
    "training.tasks.*": {"queue": "cpu", "routing_key": "cpu"},
    "datasets.tasks.*": {"queue": "cpu", "routing_key": "cpu"},
    "tenants.tasks.*": {"queue": "cpu", "routing_key": "cpu"},
    "usage.tasks.*": {"queue": "cpu", "routing_key": "cpu"},
    "serving.tasks.*": {"queue": "cpu", "routing_key": "cpu"},
    "events.tasks.deliver": {"queue": "webhooks", "routing_key": "webhooks"},
    "events.tasks.*": {"queue": "default", "routing_key": "default"},
    "core.tasks.*": {"queue": "default", "routing_key": "default"},
}
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE: dict[str, dict] = {
    "abort-abandoned-dataset-uploads": {"task": "datasets.tasks.abort_abandoned_uploads", "schedule": 3600.0},
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = True

# --- REST API ----------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.SafeJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "core.pagination.DefaultPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ML platform API",
    "DESCRIPTION": "Multi-tenant datasets, training jobs, model registry and serving.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core.schema.add_error_responses",
    ],
    "ENUM_NAME_OVERRIDES": {
        "TenantStatusEnum": "tenants.models.Tenant.Status",
        "DatasetStatusEnum": "datasets.models.Dataset.Status",
        "DatasetUploadStatusEnum": "datasets.models.DatasetUpload.Status",
        "TrainingJobStatusEnum": "training.models.TrainingJob.Status",
        "ModelVersionStatusEnum": "serving.models.ModelVersion.Status",
    },
}

# Request bodies for JSON endpoints; dataset uploads stream separately.
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
# "plain" text lines, or "json": one object per line with request, tenant and job ids (core.logs).
LOG_FORMAT = env_str("LOG_FORMAT", "plain").lower()
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r}: use plain or json.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "core.middleware.RequestIdLogFilter"}},
    "formatters": {
        "plain": {
            "()": "core.logs.PlainFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
        },
        "json": {"()": "core.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["request_id"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.server": {"level": "WARNING"},
        "botocore": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
    },
}

# --- Observability (metrics; logs above) ------------------------------------
# GET /metrics on the API and on each worker's metrics port need "Authorization: Bearer <this>" (production
# settings refuse to start either without it); empty: open, for development.
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
# A Celery worker serves its task metrics on this port (0: off); bound on WORKER_METRICS_HOST.
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", 0, minimum=0)
WORKER_METRICS_HOST = env_str("WORKER_METRICS_HOST", "0.0.0.0")  # noqa: S104 - a container's port, token-guarded
# The broker and database queries a scrape of the API's /metrics makes (queue lengths, jobs by state) give up
# after this long, so a slow broker cannot hold the scrape.
METRICS_SCRAPE_TIMEOUT_SECONDS = env_int("METRICS_SCRAPE_TIMEOUT_SECONDS", 2, minimum=1)
# The API (logger "api.access") and the serving process ("serving.access") log one line per request.
API_ACCESS_LOG = env_bool("API_ACCESS_LOG", True)
SERVING_ACCESS_LOG = env_bool("SERVING_ACCESS_LOG", True)

# --- Datasets ---------------------------------------------------------------
# Key for hashing columns tagged `pii` (per tenant, derived from this); keep it secret and stable.
PII_HASH_KEY = env_str("PII_HASH_KEY", SECRET_KEY)
# Uploads are staged on local disk (never in memory) while they are checked.
DATASET_STAGING_DIR = VAR_DIR / "uploads"
DATASET_STAGING_DIR.mkdir(parents=True, exist_ok=True)
FILE_UPLOAD_TEMP_DIR = str(DATASET_STAGING_DIR)
DATASET_PREVIEW_MAX_ROWS = 100
DATASET_UPLOAD_TTL_HOURS = env_int("DATASET_UPLOAD_TTL_HOURS", 24, minimum=1)
# Lifetime of a multipart upload's presigned part URLs (each signs its part's exact length); a client that needs
# longer gets fresh ones from POST /api/v1/datasets/uploads/<id>/part-urls while the upload is pending.
DATASET_PART_URL_TTL_SECONDS = env_int("DATASET_PART_URL_TTL_SECONDS", 900, minimum=60)
DATASET_MULTIPART_MAX_PARTS = 10_000
# Parquet compresses twice (a codec, then dictionary/run-length encoding), so a tiny file can declare or decode to
# gigabytes. Every reader (upload, validation, preview, trainer) refuses a file whose footer declares more than
# RATIO times its size uncompressed (`decompression_bomb`), or more than MAX_UNCOMPRESSED bytes declared or decoded
# (`file_too_large_uncompressed`), or a row group over MAX_ROW_GROUP bytes (`row_group_too_large`).
DATASET_MAX_DECOMPRESSION_RATIO = env_int("DATASET_MAX_DECOMPRESSION_RATIO", 100, minimum=2)
DATASET_MAX_UNCOMPRESSED_BYTES = env_int("DATASET_MAX_UNCOMPRESSED_BYTES", 4 * 1024**3, minimum=1024**2)
DATASET_MAX_ROW_GROUP_BYTES = env_int("DATASET_MAX_ROW_GROUP_BYTES", 512 * 1024**2, minimum=1024**2)

# --- Training ---------------------------------------------------------------
TRAINING_MAX_ATTEMPTS = env_int("TRAINING_MAX_ATTEMPTS", 3, minimum=1)
# A running job whose worker has not reported for this long is requeued (resuming from its checkpoint).
TRAINING_HEARTBEAT_TIMEOUT_SECONDS = env_int("TRAINING_HEARTBEAT_TIMEOUT_SECONDS", 120, minimum=5)
# After a transient failure (storage or database unreachable), how long a worker waits for them before requeuing.
TRAINING_OUTAGE_WAIT_SECONDS = env_int("TRAINING_OUTAGE_WAIT_SECONDS", 300, minimum=0)
# Besides one at each epoch's end, a running job checkpoints mid-epoch this often (a long epoch of a large dataset
# is not lost to a worker that dies in it; the resumed job skips the batches already trained on).
TRAINING_CHECKPOINT_SECONDS = env_int("TRAINING_CHECKPOINT_SECONDS", 600, minimum=1)
TRAINING_DISPATCH_BATCH = 1000
# A dispatched job that no worker started within this long is dispatched again (its message was lost).
TRAINING_DISPATCH_TIMEOUT_SECONDS = env_int("TRAINING_DISPATCH_TIMEOUT_SECONDS", 600, minimum=5)
# A job's runtime budget when the request names none (capped by what remains of the tenant's monthly compute);
# the budget is reserved against the quota while the job waits or runs, and the job stops when it is used.
TRAINING_DEFAULT_MAX_RUNTIME_SECONDS = env_int("TRAINING_DEFAULT_MAX_RUNTIME_SECONDS", 3600, minimum=1)
# The largest vocabulary (embedding rows) derived from the ids in a dataset: one huge id must not size the model;
# ids above it share the out-of-vocabulary bucket. A job may still ask for more with its vocab_size parameter.
TRAINING_MAX_VOCAB_SIZE = env_int("TRAINING_MAX_VOCAB_SIZE", 1_000_000, minimum=100)
# --- Differentially private training (training.privacy) ---------------------
# Utility honesty: a private job whose noise std on the averaged gradient (noise_multiplier / batch_size, relative
# to the clip norm) is above this is refused with privacy_low_utility unless it sets accept_low_utility (it is then
# created with a warning). Calibrated with bench/privacy.py: 2,048 click rows at epsilon 1.4 (ratio 0.021) trained to
# AUC 0.59 against 0.94 without privacy; 20,000 rows at epsilon 1 (ratio 0.005) to 0.87.
PRIVACY_MAX_NOISE_RATIO = env_float("PRIVACY_MAX_NOISE_RATIO", 0.02, minimum=0.0)
# The trainer holds a private job's training split in memory for Poisson sampling: larger datasets are refused.
# Fewer steps than this get a warning (not a refusal): clipping bounds every step's progress, so a private job
# needs more steps than its plain twin (bench/privacy.py: the sentiment model stayed at chance after 75 private
# steps at epsilon 1 and 3, and matched the plain model after 250).
PRIVACY_FEW_STEPS = env_int("PRIVACY_FEW_STEPS", 200, minimum=0)
PRIVACY_MAX_TRAIN_ROWS = env_int("PRIVACY_MAX_TRAIN_ROWS", 2_000_000, minimum=1)
# Bounds on accounting work in the API process: PLD's cost grows with the number of steps (about 4 s at
# 2,000,000 steps here), calibration under PLD stops after this many seconds with the smallest noise multiplier
# found that meets the target, and a dataset's budget composes at most this many private jobs with PLD (about 0.5 s
# per job of 3,500 steps here, under the dataset's lock), more with RDP (0.05 s per job, epsilon about 7% higher).
PRIVACY_MAX_STEPS = env_int("PRIVACY_MAX_STEPS", 1_000_000, minimum=1)
PRIVACY_CALIBRATION_SECONDS = env_int("PRIVACY_CALIBRATION_SECONDS", 10, minimum=1)
PRIVACY_MAX_BUDGET_JOBS = env_int("PRIVACY_MAX_BUDGET_JOBS", 10, minimum=1)
CELERY_BEAT_SCHEDULE |= {
    "dispatch-training-jobs": {"task": "training.tasks.dispatch_jobs", "schedule": 30.0},
    "requeue-stale-training-jobs": {"task": "training.tasks.requeue_stale_jobs", "schedule": 60.0},
    "requeue-stuck-dataset-validations": {"task": "datasets.tasks.requeue_stuck_validations", "schedule": 600.0},
}

# --- Model downloads (a version's files and archive, serving.exports) --------
# A version streamed as one .tar.gz through an API thread at most this big (bigger: its presigned file URLs),
# and this many such streams per tenant at once (each holds a thread while the client reads).
MODEL_ARCHIVE_MAX_BYTES = env_int("MODEL_ARCHIVE_MAX_BYTES", 2 * 1024**3, minimum=1024 * 1024)
MODEL_ARCHIVE_CONCURRENT_PER_TENANT = env_int("MODEL_ARCHIVE_CONCURRENT_PER_TENANT", 2, minimum=1)

# --- Serving (the separate prediction process, `manage.py serve_models`) ----
# Models are downloaded here once and verified against their manifest before loading.
SERVING_CACHE_DIR = Path(env_str("SERVING_CACHE_DIR", str(VAR_DIR / "model-cache")))
# The disk cache keeps the files of versions not loaded now within this many bytes (least recently used go first).
SERVING_CACHE_DISK_BUDGET_BYTES = env_int("SERVING_CACHE_DISK_BUDGET_BYTES", 10 * 1024**3, minimum=0)
# Loaded models may use this much memory in all; idle ones are evicted, least recently used first.
SERVING_MEMORY_BUDGET_BYTES = env_int("SERVING_MEMORY_BUDGET_BYTES", 2 * 1024**3, minimum=1)
# Versions never evicted: "<tenant slug>/<model>/<version>", comma-separated.
SERVING_PINNED_MODELS = env_list("SERVING_PINNED_MODELS", [])
# Adaptive batching: concurrent requests for one version are joined into one model call.
SERVING_MAX_BATCH_SIZE = env_int("SERVING_MAX_BATCH_SIZE", 64, minimum=1)
SERVING_BATCH_WAIT_MICROSECONDS = env_int("SERVING_BATCH_WAIT_MICROSECONDS", 5000, minimum=0)
# Batches of one version computed at once (the next forms while one computes), and TensorFlow threads
# per model call (0: the cores divided by SERVING_CONCURRENT_BATCHES).
SERVING_CONCURRENT_BATCHES = env_int("SERVING_CONCURRENT_BATCHES", 2, minimum=1)
SERVING_TF_THREADS = env_int("SERVING_TF_THREADS", 0, minimum=0)
# A compiled model's batch is computed on the event loop itself when it takes at most this long (measured at
# load): less than the hand-over to an inference thread and back. 0: always on the threads.
SERVING_INLINE_CALL_MICROSECONDS = env_int("SERVING_INLINE_CALL_MICROSECONDS", 100, minimum=0)
SERVING_MAX_INSTANCES = env_int("SERVING_MAX_INSTANCES", 1000, minimum=1)
SERVING_MAX_BODY_BYTES = env_int("SERVING_MAX_BODY_BYTES", 4 * 1024 * 1024, minimum=1024)
# Bodies over 16 KiB are parsed and checked in this many spawned processes, off the event loop (JSON parsing holds
# the interpreter lock); each tenant may have SERVING_DECODES_PER_TENANT of them in flight (more get 429).
SERVING_DECODE_PROCESSES = env_int("SERVING_DECODE_PROCESSES", 2, minimum=1)
SERVING_DECODES_PER_TENANT = env_int("SERVING_DECODES_PER_TENANT", 1, minimum=1)
# Explanations (:explain, integrated gradients: about 50 model calls per instance) have limits of their own:
# instances per request, explanations one tenant may have in flight in the process (more get 429), and in all (more
# get 503), SavedModels kept loaded for explaining (least recently used go first), and the threads they run on (apart
# from the predictions' batcher and threads, so predictions keep their path).
SERVING_EXPLAIN_MAX_INSTANCES = env_int("SERVING_EXPLAIN_MAX_INSTANCES", 16, minimum=1)
SERVING_EXPLAINS_PER_TENANT = env_int("SERVING_EXPLAINS_PER_TENANT", 2, minimum=1)
SERVING_EXPLAINS_IN_FLIGHT = env_int("SERVING_EXPLAINS_IN_FLIGHT", 16, minimum=1)
SERVING_EXPLAINERS_MAX = env_int("SERVING_EXPLAINERS_MAX", 4, minimum=1)
SERVING_EXPLAIN_THREADS = env_int("SERVING_EXPLAIN_THREADS", 1, minimum=1)
# The memory one call of a version's explain signature may take (each instance is 51 rows through the network with
# a gradient tape): instances are explained in chunks whose estimate (the manifest's bytes_per_instance) fits, and a
# version one instance of which needs more is refused (409) before any TensorFlow work.
SERVING_EXPLAIN_MAX_BYTES = env_int("SERVING_EXPLAIN_MAX_BYTES", 512 * 1024**2, minimum=1024**2)
# How long keys, tenants and alias/traffic routes are cached; an alias move is live within this.
SERVING_ROUTE_TTL_SECONDS = env_int("SERVING_ROUTE_TTL_SECONDS", 2, minimum=0)
SERVING_METERING_FLUSH_SECONDS = env_int("SERVING_METERING_FLUSH_SECONDS", 5, minimum=1)
# Suspended tenants are re-read this often, apart from the key cache, so a suspension is refused at once.
SERVING_SUSPENSION_POLL_MILLISECONDS = env_int("SERVING_SUSPENSION_POLL_MILLISECONDS", 500, minimum=50)
# When set, GET /metrics on the serving process needs "Authorization: Bearer <this>".
SERVING_METRICS_TOKEN = env_str("SERVING_METRICS_TOKEN", "")
# Redis holding the plans' prediction rate-limit buckets for every serving process and host (exact across them);
# empty: each process limits its own traffic. Defaults to CACHE_URL when that is Redis.
SERVING_RATE_LIMIT_URL = env_str("SERVING_RATE_LIMIT_URL", CACHE_URL if CACHE_URL.startswith("redis") else "")
if SERVING_RATE_LIMIT_URL:
    SERVING_RATE_LIMIT_URL = env_url("SERVING_RATE_LIMIT_URL", SERVING_RATE_LIMIT_URL, schemes={"redis", "rediss"})
# Where the API's dashboard sends "try it" predictions (the serving process, server to server).
SERVING_URL = env_url("SERVING_URL", "http://127.0.0.1:8001", schemes={"http", "https"})
CELERY_BEAT_SCHEDULE |= {
    "aggregate-tenant-usage": {"task": "usage.tasks.aggregate_usage", "schedule": 3600.0},
    "purge-idempotency-records": {"task": "tenants.tasks.purge_idempotency_records", "schedule": 3600.0},
}

# --- Webhooks (events) ---------------------------------------------------------
# Tenants' webhook URLs may not reach loopback or private networks (SSRF) unless this is on: on with DEBUG (the
# embedded stack) and in tests (a receiver on 127.0.0.1), off otherwise. Link-local (cloud metadata), multicast
# and reserved addresses are refused always. Plain http is allowed only with WEBHOOK_ALLOW_HTTP (default: DEBUG).
WEBHOOK_ALLOW_PRIVATE_NETWORKS = env_bool("WEBHOOK_ALLOW_PRIVATE_NETWORKS", DEBUG)
WEBHOOK_ALLOW_HTTP = env_bool("WEBHOOK_ALLOW_HTTP", DEBUG)
WEBHOOK_MAX_ENDPOINTS_PER_TENANT = env_int("WEBHOOK_MAX_ENDPOINTS_PER_TENANT", 10, minimum=1)
WEBHOOK_MAX_URL_LENGTH = 2048
# Attempts per delivery; the wait after failed attempt n is BASE x FACTOR^(n-1) seconds, at most MAX, +-20% jitter
# (10 s, 1 min, 6 min, 36 min, 3.6 h, then 6 h: about 16 hours from the first attempt to the eighth).
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 8, minimum=1)
WEBHOOK_RETRY_BASE_SECONDS = env_int("WEBHOOK_RETRY_BASE_SECONDS", 10, minimum=1)
WEBHOOK_RETRY_FACTOR = 6
WEBHOOK_RETRY_MAX_SECONDS = env_int("WEBHOOK_RETRY_MAX_SECONDS", 6 * 3600, minimum=1)
# Retries due sooner than this go back to the broker with a countdown; later ones are sent by the sweeper.
WEBHOOK_COUNTDOWN_MAX_SECONDS = 600
WEBHOOK_CONNECT_TIMEOUT_SECONDS = 3
WEBHOOK_READ_TIMEOUT_SECONDS = 5
WEBHOOK_TOTAL_TIMEOUT_SECONDS = 10
# Attempts of one tenant in flight at once (its slow receiver holds at most this many worker slots).
WEBHOOK_CONCURRENT_PER_TENANT = env_int("WEBHOOK_CONCURRENT_PER_TENANT", 2, minimum=1)
# An endpoint whose attempts all failed for this long (and at least this many) is disabled, and says why.
WEBHOOK_DISABLE_AFTER_SECONDS = env_int("WEBHOOK_DISABLE_AFTER_SECONDS", 3 * 24 * 3600, minimum=60)
WEBHOOK_DISABLE_AFTER_FAILURES = env_int("WEBHOOK_DISABLE_AFTER_FAILURES", 20, minimum=1)
# quota.nearly_used is sent once per quota and month when use reaches this share of the plan's limit.
WEBHOOK_QUOTA_THRESHOLD_PERCENT = env_int("WEBHOOK_QUOTA_THRESHOLD_PERCENT", 80, minimum=1)
# Events and their delivery log are kept this long (deliveries still being retried longer).
WEBHOOK_RETENTION_DAYS = env_int("WEBHOOK_RETENTION_DAYS", 30, minimum=1)
CELERY_BEAT_SCHEDULE |= {
    "send-due-webhook-deliveries": {"task": "events.tasks.send_due_deliveries", "schedule": 30.0},
    "purge-old-webhook-events": {"task": "events.tasks.purge_old_events", "schedule": 3600.0},
}
