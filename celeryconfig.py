"""Celery configuration: queues, routes, limits and retry policy, declared in one place.

Loaded by ``tasks.app`` with ``config_from_object("celeryconfig")``. The broker URL comes from
Django settings (``CELERY_BROKER_URL`` in the environment; unset, kombu's SQLAlchemy transport on
a SQLite file: a real broker that needs no server). ``tests/test_celeryconfig.py`` asserts the
invariants between the numbers below.
"""

from __future__ import annotations

from django.conf import settings
from kombu import Queue

from catalog.retry import RetryPolicy

REFRESH_QUEUE = "catalog.refresh"
# Housekeeping (the outbox requeue): its own queue, so that a backlog of refreshes never starves
# it (found by the chaos soak: on the embedded broker 37 ticks in a row expired behind ~1,100 refreshes).
MAINTENANCE_QUEUE = "celery"
SWEEP_QUEUE = "catalog.sweep"

broker_url = settings.CELERY_BROKER_URL
broker_connection_retry_on_startup = True
# Redis/SQS: a message not acked within this many seconds is handed to another worker. Every
# countdown and every hard time limit below stays under it, or a retried or long task would run twice.
BROKER_VISIBILITY_TIMEOUT = 3600
# (The embedded SQLAlchemy transport has no visibility timeout and passes its options to SQLAlchemy's
# create_engine, which refuses unknown ones.)
_VISIBILITY_BROKERS = ("redis://", "rediss://", "sqs://", "sentinel://")
broker_transport_options = (
    {"visibility_timeout": BROKER_VISIBILITY_TIMEOUT} if broker_url.startswith(_VISIBILITY_BROKERS) else {}
)
if broker_url.startswith(("redis://", "rediss://")) and settings.CELERY_BROKER_KEY_PREFIX:
    broker_transport_options["global_keyprefix"] = settings.CELERY_BROKER_KEY_PREFIX

task_ignore_result = True  # nobody reads results: state lives in the overview rows and SweepRun
result_backend = None
task_serializer = "json"
accept_content = ["json"]
task_default_queue = "celery"
task_queues = (Queue(REFRESH_QUEUE), Queue(SWEEP_QUEUE), Queue("celery"))
task_routes = {
    "catalog_sync.refresh_course": {"queue": REFRESH_QUEUE},
    "catalog_sync.sweep*": {"queue": SWEEP_QUEUE},
}

# One message at a time per worker process: catalog tasks are slow I/O, and a prefetched message
# waits behind a slow one (and is lost with it on a crash) instead of going to an idle worker.
worker_prefetch_multiplier = 1
task_acks_late = True
# Deliberate: a task whose worker process died (SIGKILL, OOM) is requeued and redelivered. The
# catalog tasks are idempotent and time-limited, so a redelivery costs one more fetch at most.
task_reject_on_worker_lost = True
worker_hijack_root_logger = False
worker_send_task_events = False

# --- The per-course refresh task ------------------------------------------------------------
REFRESH_SOFT_TIME_LIMIT = 90  # seconds: SoftTimeLimitExceeded -> retried like a timeout
REFRESH_TIME_LIMIT = 120  # seconds: the process is killed
# HTTP requests one task attempt may make in the worst case: token, request, token after a 401,
# the request again. Timeouts are clamped so that these all fit in the soft limit.
REFRESH_HTTP_ATTEMPTS = 4
# Retries: exponential backoff with full jitter, Retry-After as a floor (catalog.retry.next_retry).
REFRESH_RETRY_BASE = 2.0  # seconds
REFRESH_RETRY_CAP = 120.0  # seconds, the largest jittered backoff
# 12 retries: ceilings 2+4+...+64+120*6 = 846 s at most, ~7 minutes expected: rides out an outage.
REFRESH_MAX_RETRIES = 12
# No countdown is longer, whatever Retry-After says: a retried message waits in the worker
# unacked, and must be acked before the visibility timeout. A longer throttle is waited out in
# several fleet-pause steps, which spend no retries.
MAX_COUNTDOWN = 900.0
# Publishes of one course within this many seconds cost one catalog fetch (the first publish
# schedules the fetch this much later; the others find it pending).
PUBLISH_COALESCE_WINDOW = float(getattr(settings, "CATALOG_PUBLISH_COALESCE_WINDOW", 2.0))

# --- The refresh outbox requeue (tasks.refresh.requeue_refreshes) ---------------------------
# Every this many seconds, beat queues a fetch for each course whose refresh marker
# (``catalog_refresh_requested_at``) is older than the coalescing window plus this interval: a
# publish whose message never reached the broker, or was lost in it, is fetched all the same.
REFRESH_REQUEUE_INTERVAL = float(getattr(settings, "CATALOG_REFRESH_REQUEUE_INTERVAL", 60.0))
REQUEUE_SOFT_TIME_LIMIT = 50  # seconds: a tick queues at most 10,000 courses
REQUEUE_TIME_LIMIT = 60

# --- The full sweep -------------------------------------------------------------------------
# The coordinator plans and dispatches chunks (a few queries per 20 chunks) and returns.
SWEEP_SOFT_TIME_LIMIT = 1500
SWEEP_TIME_LIMIT = 1800
# A chunk: one bulk request per ~100 keys (URLs stay under 4 KB), so up to ~10 at page size 1,000.
SWEEP_CHUNK_SOFT_TIME_LIMIT = 240
SWEEP_CHUNK_TIME_LIMIT = 300
SWEEP_CHUNK_HTTP_ATTEMPTS = 12
# A beat tick that could not start within this many seconds is dropped: missed sweeps never pile up.
SWEEP_EXPIRES = 3600

beat_scheduler = "django_celery_beat.schedulers:DatabaseScheduler"
# django-celery-beat's DatabaseScheduler writes these entries to its tables when beat starts
# (the interval follows the setting at every start); the daily sweep is created by a migration.
beat_schedule = {
    "catalog refresh requeue": {
        "task": "catalog_sync.requeue_refreshes",
        "schedule": REFRESH_REQUEUE_INTERVAL,
        # A tick that no worker took before the next one is dropped: ticks never pile up.
        # (`expire_seconds` is the DatabaseScheduler's name; it ignores `expires`.)
        "options": {"queue": MAINTENANCE_QUEUE, "expire_seconds": max(1, round(REFRESH_REQUEUE_INTERVAL))},
    },
}

# The retry policy of both catalog tasks, the per-course one and the sweep chunk
# (``tasks.base.CatalogTask.retry_policy``), over Celery's own count of retries spent.
REFRESH_RETRY_POLICY = RetryPolicy(
    base=REFRESH_RETRY_BASE,
    cap=REFRESH_RETRY_CAP,
    max_retries=REFRESH_MAX_RETRIES,
    max_countdown=MAX_COUNTDOWN,
)
