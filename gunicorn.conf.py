"""gunicorn's configuration for the web process: ``gunicorn -c gunicorn.conf.py wsgi:application``.

``make run`` starts it so (``scripts/run.py``); README "Production" gives the command and the
settings. gunicorn also reads this file by itself when started from the repository's root. Every
value can be overridden by the environment variable named beside it, or on the command line
(``GUNICORN_CMD_ARGS``).

Why these values:

- ``sync`` workers, ``WEB_CONCURRENCY`` of them (default 2, gunicorn's own variable): every view is
  short and CPU-bound on a database round trip; one request per process keeps the Python work of
  two requests off one core. Raise to 2-4 per core; ``WEB_THREADS`` > 1 switches to the gthread
  worker (threads share a process's GIL: useful only where requests wait on I/O).
- ``timeout`` 30 s: the longest request on purpose is a ``?sync=1`` refresh, bounded at 5 s; a
  worker silent for 30 s is stuck and is replaced.
- ``max_requests`` with jitter: each worker is replaced after about 10,000 requests, so that slow
  growth (fragmentation, caches) is bounded, and never all workers at once.
- The garbage collector: see ``post_worker_init``.
"""

from __future__ import annotations

import gc
import os

from observability import gunicorn_conf as metrics_hooks

bind = os.environ.get("WEB_ADDRESS", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "1"))
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("WEB_GRACEFUL_TIMEOUT", "30"))
keepalive = 5  # seconds an idle kept-alive connection stays open (gthread; sync workers close)
max_requests = int(os.environ.get("WEB_MAX_REQUESTS", "10000"))
max_requests_jitter = max_requests // 10
# Access log off by default: the reverse proxy in front logs requests; "-" writes them to stdout.
accesslog = os.environ.get("WEB_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("WEB_LOG_LEVEL", "info")
# gunicorn 24+ opens a control socket, by default one path per user (~/.gunicorn/gunicorn.ctl):
# two servers of one user (make run and make bench) would fight over it; nothing here uses it.
control_socket_disable = True

# WEB_GC_FREEZE=0 turns the freeze off (to measure it: bench/enrollments_load.py does).
GC_FREEZE = os.environ.get("WEB_GC_FREEZE", "1").lower() not in ("0", "false", "no", "off")


def on_starting(server) -> None:
    """The master, before its workers fork: Prometheus files of processes gone since (metrics)."""
    metrics_hooks.on_starting(server)


def child_exit(server, worker) -> None:
    """A worker exited (restart, timeout, max_requests): its live gauges leave the scrape."""
    metrics_hooks.child_exit(server, worker)


def post_worker_init(worker) -> None:
    """In each worker, once Django and the application are loaded.

    1. Load what the first request would load lazily (the URLconf and so every view, DRF, the
       admin), so that it is part of what is frozen below, not garbage the collector scans.
    2. The collector's tail: a full (oldest generation) collection scans every tracked object
       of the process -- Django, DRF and the app, ~130,000 objects: 50-60 ms of CPU each time.
       Before issue 11 a 500-enrollment list allocated enough to trigger one every few dozen
       requests (the one-client p95); the list allocates far less now, and one still comes about
       every 1,000 requests (the worst request). ``gc.freeze()`` moves everything alive after
       start-up to a permanent generation that collections never scan: the full collections
       that remain scan only what requests left behind, ~4 ms each (``make bench``,
       ``enrollments``). What a request allocates is collected as before. (CPython's docs
       describe freeze for pre-forking servers, there to keep pages shared; here it is the scan
       that matters, so each worker freezes after loading the app.)
    3. Development settings only (``DEBUG``, ``make run``): serve static files as runserver does,
       so the admin has its styles; production serves ``STATIC_ROOT`` from the proxy.
    """
    from django.conf import settings
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 -- imports every view module now
    if settings.DEBUG:
        from django.contrib.staticfiles.handlers import StaticFilesHandler

        worker.wsgi = StaticFilesHandler(worker.wsgi)
    if GC_FREEZE:
        gc.collect()
        gc.freeze()
