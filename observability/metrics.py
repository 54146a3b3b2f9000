"""The metric objects the service reports, declared once; everything else increments them.

Multiprocess mode (prometheus_client's ``multiprocess``): gunicorn workers and Celery's prefork
pool processes each write their samples to memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR``;
the ``/metrics`` view sums the files of every process that shares the directory. The directory
must be known before ``prometheus_client`` is first imported (it picks its value class then), so
this module sets it: ``PROMETHEUS_MULTIPROC_DIR`` from the environment, else ``var/prometheus``
under ``CATALOG_SYNC_VAR_DIR`` (the repository's ``var/`` by default): the package sets it
(``observability.multiproc_dir``). See ``observability.multiproc``
for when the directory is cleaned and how dead processes are marked.

Label values are small fixed sets (never a course key): each series is one file entry per process.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client import values as _values

from observability import MULTIPROC_DIR  # noqa: F401  (re-exported: the directory in use)

if not getattr(_values.ValueClass, "__name__", "").startswith("MmapedValue"):  # pragma: no cover
    raise RuntimeError(
        "prometheus_client was imported before observability.metrics set PROMETHEUS_MULTIPROC_DIR: "
        "its samples would stay in this process; import observability.metrics first"
    )

PREFIX = "catalog_sync"

# --- Catalog HTTP calls (reported by catalog_client through its observer hook) -----------------
CATALOG_REQUESTS = Counter(
    f"{PREFIX}_catalog_requests",
    "Requests to the catalog (course-discovery), by method, outcome and HTTP status "
    "(status 0: no response: timeout or connection error).",
    ["method", "outcome", "status"],
)
CATALOG_LATENCY = Histogram(
    f"{PREFIX}_catalog_request_seconds",
    "Time of one catalog request, until its response or its failure.",
    ["method"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)

# --- Celery tasks (observability.celery counts them from Celery's signals) ----------------------
TASKS = Counter(
    f"{PREFIX}_tasks",
    "Task runs by task name and outcome: the task's own result (ok, deferred, disabled, gave_up, "
    "error, ...), retried (a retry was scheduled) or failed (an exception ended it).",
    ["task", "outcome"],
)

# --- Refresh requests (tasks.refresh) -----------------------------------------------------------
REFRESHES = Counter(
    f"{PREFIX}_refreshes",
    "Requests for a course fetch: queued (a task was sent), coalesced (one was already pending), "
    "deferred (broker unavailable: left in the outbox).",
    ["outcome"],
)

# --- Throttle (catalog.throttle) ----------------------------------------------------------------
THROTTLE_PAUSES = Counter(
    f"{PREFIX}_throttle_pauses",
    "Times a catalog call waited for the fleet-wide rate limit (or a Retry-After pause).",
    ["reason"],
)

# --- Events from the event bus (signals' consumer) ----------------------------------------------
EVENTS_CONSUMED = Counter(
    f"{PREFIX}_events_consumed",
    "Events read from the event bus, by outcome: applied, ignored_stale, undecodable, ...",
    ["outcome"],
)

# --- Sweep chunks (catalog.sweep / tasks.sweep) -------------------------------------------------
SWEEP_CHUNKS = Counter(
    f"{PREFIX}_sweep_chunks",
    "Sweep chunks finished, by outcome (done, failed, ...).",
    ["outcome"],
)


def label(value: object) -> str:
    """A label value: lower case, ``-`` and spaces as ``_`` (``gave-up`` -> ``gave_up``)."""
    return str(value).strip().lower().replace("-", "_").replace(" ", "_") or "unknown"


def observe_catalog_request(method: str, status: int | None, outcome: str, seconds: float) -> None:
    """The catalog client's observer: one finished request (``status`` None when no response)."""
    CATALOG_REQUESTS.labels(method=method.upper(), outcome=label(outcome), status=str(status or 0)).inc()
    CATALOG_LATENCY.labels(method=method.upper()).observe(max(seconds, 0.0))


def count_task(task: str, outcome: str) -> None:
    TASKS.labels(task=task, outcome=label(outcome)).inc()


def count_refreshes(outcome: str, n: int = 1) -> None:
    if n:
        REFRESHES.labels(outcome=label(outcome)).inc(n)


def count_throttle_pause(reason: str = "rate_limit") -> None:
    THROTTLE_PAUSES.labels(reason=label(reason)).inc()


def count_event(outcome: str) -> None:
    EVENTS_CONSUMED.labels(outcome=label(outcome)).inc()


def count_sweep_chunk(outcome: str) -> None:
    SWEEP_CHUNKS.labels(outcome=label(outcome)).inc()


def counts_refreshes(enqueue: Callable[..., str]) -> Callable[..., str]:
    """Decorates the one function that queues a course fetch (it returns a task id, or
    ``coalesced``, or ``deferred``): each call is counted as ``queued``, ``coalesced`` or
    ``deferred``."""

    @functools.wraps(enqueue)
    def counted(*args: Any, **kwargs: Any) -> str:
        outcome = enqueue(*args, **kwargs)
        count_refreshes(outcome if outcome in ("coalesced", "deferred") else "queued")
        return outcome

    return counted
