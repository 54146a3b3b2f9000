"""Celery signal hooks: count every task run by outcome, keep the log context of the running
task, mark dead pool processes for the metrics, and log like the web process.

Imported once by the Celery app module (``tasks.app``); connecting is all it does. Celery's
signals are process-wide, so nothing here names a task module.

Outcome of a run (``catalog_sync_tasks_total{task, outcome}``):

- the task's return value when it is a short word (``ok``, ``deferred``, ``disabled``,
  ``gave-up`` -> ``gave_up``, ``done``, ``failed``, ...); any other return value counts ``ok``;
- ``retried`` when it ends by scheduling a retry (``Task.retry`` or a pause that spends none);
- ``failed`` when an exception ends it (``task_failure``).
"""

from __future__ import annotations

import logging.config
import os
import re
from typing import Any

from celery.signals import (
    setup_logging,
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
    task_success,
    worker_init,
    worker_process_shutdown,
    worker_ready,
)
from django.conf import settings

from observability import exporter, logcontext, metrics, multiproc

_WORD = re.compile(r"^[a-z][a-z_-]{0,31}$")

# Where each task carries its course key and sweep id: (argument name, position).
COURSE_KEY_ARG = ("course_key", 0)
SWEEP_ID_ARG = ("run_id", 0)
SWEEP_TASKS = {"catalog_sync.sweep_chunk"}
COURSE_TASKS = {"catalog_sync.refresh_course"}


def outcome_of(result: Any) -> str:
    """The outcome label for a task's return value."""
    if isinstance(result, str) and _WORD.match(result.strip().lower()):
        return metrics.label(result)
    return "ok"


def _arg(args: Any, kwargs: Any, name: str, position: int) -> Any:
    if kwargs and name in kwargs:
        return kwargs[name]
    if args and len(args) > position:
        return args[position]
    return None


@task_prerun.connect
def _bind_context(
    task_id: str | None = None, task: Any = None, args: Any = None, kwargs: Any = None, **_: Any
):
    name = getattr(task, "name", "")
    fields: dict[str, Any] = {"task_id": task_id, "course_key": None, "sweep_id": None}
    if name in COURSE_TASKS:
        fields["course_key"] = _arg(args, kwargs, *COURSE_KEY_ARG)
    if name in SWEEP_TASKS:
        fields["sweep_id"] = _arg(args, kwargs, *SWEEP_ID_ARG)
    logcontext.bind(**fields)


@task_postrun.connect
def _clear_context(**_: Any) -> None:
    logcontext.clear()


@task_success.connect
def _count_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    metrics.count_task(getattr(sender, "name", "unknown"), outcome_of(result))


@task_retry.connect
def _count_retry(sender: Any = None, request: Any = None, **_: Any) -> None:
    # sender is the task's request-bound task; request.task names it too
    name = getattr(sender, "name", None) or getattr(request, "task", None) or "unknown"
    metrics.count_task(name, "retried")


@task_failure.connect
def _count_failure(sender: Any = None, **_: Any) -> None:
    metrics.count_task(getattr(sender, "name", "unknown"), "failed")


@worker_init.connect
def _drop_dead_samples(**_: Any) -> None:
    """The worker's main process, before it forks its pool: files of processes gone since the
    last run leave the directory (live processes of the web or another worker keep theirs)."""
    multiproc.clean_dead()


@worker_process_shutdown.connect
def _mark_dead(pid: int | None = None, **_: Any) -> None:
    multiproc.mark_dead(pid or os.getpid())


@worker_ready.connect
def _serve_metrics(**_: Any) -> None:
    """CELERY_METRICS_ADDRESS (opt-in): this worker's samples on their own address, for a host
    without a web process (observability.exporter). Started once the pool has forked."""
    address = os.environ.get("CELERY_METRICS_ADDRESS")
    token = getattr(settings, "METRICS_TOKEN", None)
    if address and not token:
        logging.getLogger("observability.exporter").warning(
            "metrics: CELERY_METRICS_ADDRESS is set but METRICS_TOKEN is not: nothing served"
        )
    elif address:
        try:
            exporter.serve(address, token)
        except OSError as exc:  # another worker of this host serves it already: the same sums
            logging.getLogger("observability.exporter").warning(
                "metrics: not served on %s: %s (another worker of this host may serve it)", address, exc
            )


if getattr(settings, "LOG_FORMAT", "plain") == "json":
    # Connected only for JSON: a receiver of setup_logging replaces Celery's own logging setup
    # (its format and --loglevel) with Django's LOGGING, which carries the JSON formatter.

    @setup_logging.connect
    def _django_logging(**_: Any) -> None:
        logging.config.dictConfig(settings.LOGGING)
