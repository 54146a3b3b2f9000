"""Settings every environment shares. Environment-specific modules import * from here.

Every value that differs between deployments is read from the environment (the names are listed
in README.md "Configuration" and docs/runbook.md). Runtime tunables (page size, timeouts, ...)
are NOT here: they live in the database (``catalog.models.CatalogIntegration``), editable in the
admin with history.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url

from settings.env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
# Local state (the SQLite files of the embedded defaults). Importing settings writes nothing: the
# directories a SQLite database or the embedded broker needs are created when Django starts
# (``settings.apps.LocalFilesConfig.ready``), and only for the paths actually configured.
VAR_DIR = Path(env_str("CATALOG_SYNC_VAR_DIR", str(BASE_DIR / "var")))

# https://docs.djangoproject.com/en/5.2/ref/settings/#secret-key
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "dev-only-insecure-secret-key")  # production overrides
DEBUG = env_bool("DJANGO_DEBUG", False)
# https://docs.djangoproject.com/en/5.2/ref/settings/#allowed-hosts : no default outside
# development and tests (settings.dev and settings.test serve loopback names only).
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", [])
# Development and test defaults of ALLOWED_HOSTS: loopback names, and the test client's.
LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "[::1]", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "waffle",
    "config_models",
    "django_celery_beat",
    "overviews.apps.OverviewsConfig",
    "catalog.apps.CatalogConfig",
    "enrollments.apps.EnrollmentsConfig",
    "signals.apps.SignalsConfig",
    "ops.apps.OpsConfig",
    "settings.apps.LocalFilesConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "waffle.middleware.WaffleMiddleware",
    # config_models caches configuration per thread in edx-django-utils' request cache: clear it
    # after every request, so that a change in the admin reaches long-lived web threads.
    "edx_django_utils.cache.middleware.RequestCacheMiddleware",
]

ROOT_URLCONF = "urls"
WSGI_APPLICATION = "wsgi.application"

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

# https://github.com/jazzband/dj-database-url : DATABASE_URL, default a SQLite file under var/
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'catalog_sync.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A worker, beat and web share one SQLite file on a laptop: wait for locks rather than fail
    # (timeout), take the write lock when a transaction starts so two writers queue instead of
    # deadlocking on a lock upgrade (IMMEDIATE), and let readers run beside the writer (WAL).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
    DATABASES["default"]["CONN_MAX_AGE"] = 0

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# Cache: shared by web, workers and beat (configuration rows, publish coalescing markers, the
# fleet-wide throttle). Redis in production (CACHE_URL=redis://...); on a laptop Django's database
# cache, which every process shares through the database (its table is created by `manage.py migrate`).
CACHE_URL = env_str("CACHE_URL")
if CACHE_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}}
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "catalog_sync_cache",
        }
    }

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
    # https://www.django-rest-framework.org/api-guide/throttling/ : the views name their scope
    # (api.throttling). Counts live in the cache: a lost or raced count lets one extra request
    # through, an evicted one restarts the window; nothing but admission depends on them.
    "DEFAULT_THROTTLE_RATES": {
        # POST .../refresh/ per user (refreshes coalesce anyway; this bounds the request load).
        "catalog_refresh": env_str("API_REFRESH_THROTTLE_RATE", "60/minute"),
        # GET /health/ per client address (per user for a logged-in caller). Load-balancer and
        # kubelet probes come from a few addresses and share one count across every replica:
        # raise it if probes of many replicas come from one address.
        "health": env_str("HEALTH_THROTTLE_RATE", "60/minute"),
    },
    # How many proxies in front of the web process append to X-Forwarded-For: the client address
    # the throttles count by is the one they saw. 0 (the default) ignores the header, which a
    # client could otherwise forge to escape its count; behind one proxy, set 1.
    "NUM_PROXIES": env_int("DJANGO_NUM_PROXIES", 0),
}

# --- Catalog connection (secrets only from the environment, never logged) -------------------
CATALOG_API_URL = env_str("CATALOG_API_URL")
CATALOG_OAUTH_URL = env_str("CATALOG_OAUTH_URL")
CATALOG_CLIENT_ID = env_str("CATALOG_CLIENT_ID")
CATALOG_CLIENT_SECRET = env_str("CATALOG_CLIENT_SECRET")
# Publishes of one course within this many seconds cost one catalog fetch.
CATALOG_PUBLISH_COALESCE_WINDOW = env_float("CATALOG_PUBLISH_COALESCE_WINDOW", 2.0)
# A sweep that has not heartbeaten for this many seconds is dead; the next trigger resumes it.
CATALOG_SWEEP_LEASE_TTL = env_int("CATALOG_SWEEP_LEASE_TTL", 600)
# Seconds between beat's requeue of refresh requests that never reached a worker (the outbox).
CATALOG_REFRESH_REQUEUE_INTERVAL = env_float("CATALOG_REFRESH_REQUEUE_INTERVAL", 60.0)
# TLS verification is always on; a private CA is trusted with requests' REQUESTS_CA_BUNDLE.

# --- The LMS this service serves ------------------------------------------------------------
# Its root URL, as Open edX's own LMS_ROOT_URL: the enrollments API links a course without a
# marketing URL to the LMS about page, <LMS_ROOT_URL>/courses/<course id>/about. Required in
# production (settings.production); development and tests default to the local LMS's address.
LMS_ROOT_URL = (env_str("LMS_ROOT_URL") or "http://localhost:8000").rstrip("/")

# --- The Open edX event bus (Studio's COURSE_CATALOG_INFO_CHANGED; see README "Event bus") ----
# Open edX's own setting names. Unset EVENT_BUS_REDIS_CONNECTION_URL: no consumer (make run starts
# none; consume_events refuses). Kafka instead of Redis Streams: install edx-event-bus-kafka and set
# EVENT_BUS_CONSUMER = "edx_event_bus_kafka.KafkaEventConsumer" with its EVENT_BUS_KAFKA_* settings.
INSTALLED_APPS += ["openedx_events"]  # the consume_events command and the signals' Avro schemas
EVENT_BUS_REDIS_CONNECTION_URL = env_str("EVENT_BUS_REDIS_CONNECTION_URL")
# Prefixes every topic ("prod" -> stream "prod-course-catalog-info-changed"), as in Studio.
EVENT_BUS_TOPIC_PREFIX = env_str("EVENT_BUS_TOPIC_PREFIX", "")
# edx-event-bus-redis's consumer, resuming from its group and logging undecodable messages with
# their stream id (signals.consumer says why).
EVENT_BUS_CONSUMER = env_str("EVENT_BUS_CONSUMER", "signals.consumer.CatalogEventConsumer")
# Producing is Studio's job; tests and the demo produce the same way through this.
EVENT_BUS_PRODUCER = env_str("EVENT_BUS_PRODUCER", "edx_event_bus_redis.create_producer")
# edx-django-utils (under the event bus libraries) reports to New Relic by default and warns that
# it is not installed; this service's metrics are Prometheus's (observability).
OPENEDX_TELEMETRY: list[str] = []
# Seconds a consumer blocks on the stream per read (upstream's default is 60; shorter stops faster).
EVENT_BUS_REDIS_CONSUMER_POLL_TIMEOUT = env_int("EVENT_BUS_REDIS_CONSUMER_POLL_TIMEOUT", 10)
# Exit after this many errors in a row so that a supervisor restarts a stuck consumer (0: never).
EVENT_BUS_REDIS_CONSUMER_CONSECUTIVE_ERRORS_LIMIT = (
    env_int("EVENT_BUS_REDIS_CONSUMER_CONSECUTIVE_ERRORS_LIMIT", 0) or None
)
# A refresh that finds a course created less than this many seconds ago `missing` from the catalog
# checks again at growing delays (60 s, doubling, up to 600 s), instead of waiting for the daily
# sweep: course-discovery creates its run from the same publish event after its own delay.
CATALOG_NEW_COURSE_WINDOW = env_float("CATALOG_NEW_COURSE_WINDOW", 3600.0)
# The first of those delays (course-discovery's processing delay, 60 s by default).
CATALOG_NEW_COURSE_FIRST_RECHECK = env_float("CATALOG_NEW_COURSE_FIRST_RECHECK", 60.0)

# --- Celery (see celeryconfig.py for queues, routes and limits) ------------------------------
# Unset: kombu's SQLAlchemy transport on a SQLite file under var/ -- a real broker that needs no
# server, so a real worker process runs on a laptop. Never eager mode.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", f"sqla+sqlite:///{VAR_DIR / 'broker.sqlite3'}")
# Redis broker only: a prefix on every key the broker uses, so that deployments (or test runs)
# sharing one Redis database never see each other's messages. Empty: no prefix.
CELERY_BROKER_KEY_PREFIX = env_str("CELERY_BROKER_KEY_PREFIX", "")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
    },
}

# --- Observability (observability/, docs/runbook.md "Metrics, health and logs") ---------------
# LOG_FORMAT: "plain" (one readable line) or "json" (one JSON object a line, python-json-logger).
# Every line carries the log context when known: course_key, task_id, sweep_id (observability.
# logcontext), so one search follows a course through publish, task and sweep. The Celery worker
# and beat log the same way under json (observability.celery applies this LOGGING).
LOG_FORMAT = (env_str("LOG_FORMAT", "plain") or "plain").strip().lower()
if LOG_FORMAT not in ("plain", "json"):
    raise ValueError(f"LOG_FORMAT must be plain or json, not {LOG_FORMAT!r}")
LOGGING["filters"] = {"logcontext": {"()": "observability.logcontext.ContextFilter"}}
LOGGING["formatters"]["json"] = {
    "()": "pythonjsonlogger.json.JsonFormatter",
    "format": "%(asctime)s %(levelname)s %(name)s %(message)s %(process)d",
    "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"},
}
LOGGING["handlers"]["console"].update(formatter=LOG_FORMAT, filters=["logcontext"])

# /metrics (Prometheus) answers only a scraper that sends "Authorization: Bearer <METRICS_TOKEN>".
# Unset: /metrics is off (404 for everyone; no address is trusted, a reverse proxy would make
# every client look local). Samples of every process go to PROMETHEUS_MULTIPROC_DIR (default
# var/prometheus; observability.metrics).
METRICS_TOKEN = env_str("METRICS_TOKEN")

# Health (django-health-check; api.health): the staff detail at /health/detail/ adds the sweep's
# freshness: the last complete sweep must be younger than the sweep schedule's interval (the beat
# PeriodicTask "catalog full sweep") plus its expected duration: the last complete run's duration,
# at least this many seconds.
HEALTH_SWEEP_EXPECTED_DURATION = env_int("HEALTH_SWEEP_EXPECTED_DURATION", 3600)
INSTALLED_APPS += ["health_check"]  # its templates (the detail page); checks are listed in api.health
