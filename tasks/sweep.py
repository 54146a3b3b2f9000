"""The scheduled full resync on Celery: a coordinator that plans and dispatches chunk tasks."""

from __future__ import annotations

import logging

from celery.exceptions import SoftTimeLimitExceeded
from django.db import DatabaseError

import celeryconfig as conf
from catalog.connection import shared_client
from catalog.errors import CatalogError, CatalogRetryableError, CatalogTimeout
from catalog.retry import backoff_delay
from catalog.sweep import (
    ChunkOutcome,
    finish_chunk,
    heartbeat,
    mark_planning_done,
    pending_chunks,
    plan_chunks,
    refresh_run,
    start_sweep,
    sync_chunk,
)
from catalog.switches import catalog_calls_disabled
from catalog.sync import SyncCounters
from tasks.app import app

log = logging.getLogger("tasks.sweep")


class CatalogRetryableDatabaseError(CatalogRetryableError):
    """Our own database failed transiently while syncing a chunk; retried like a catalog 503."""


@app.task(
    name="catalog_sync.sweep",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=conf.SWEEP_SOFT_TIME_LIMIT,
    time_limit=conf.SWEEP_TIME_LIMIT,
    ignore_result=True,
)
def sweep(trigger: str = "beat", page_size: int | None = None) -> str:
    """Start (or resume) the full resync and dispatch its chunks; returns at once. Single flight:
    a second trigger while a sweep runs is a logged no-op."""
    if catalog_calls_disabled():
        log.info("catalog sweep: catalog calls are disabled; no sweep")
        return "disabled"
    run = start_sweep(trigger, page_size=page_size)
    if run is None:
        return "already-running"
    dispatched = 0
    for chunk in pending_chunks(run):  # a resumed run: chunks lost with a dead worker are redone
        _dispatch(run.pk, chunk)
        dispatched += 1
    for batch in plan_chunks(run):
        for chunk in batch:
            _dispatch(run.pk, chunk)
        dispatched += len(batch)
    mark_planning_done(run)
    refresh_run(run)  # zero courses, or every chunk already done: completes now
    log.info("catalog sweep: sweep #%s dispatched %d chunk(s)", run.pk, dispatched)
    return f"sweep #{run.pk}: {dispatched} chunk(s)"


def _dispatch(run_id: int, chunk) -> None:
    sweep_chunk.apply_async((run_id, chunk.pk, chunk.first_key, chunk.last_key))


@app.task(
    name="catalog_sync.sweep_chunk",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=conf.SWEEP_CHUNK_SOFT_TIME_LIMIT,
    time_limit=conf.SWEEP_CHUNK_TIME_LIMIT,
    max_retries=conf.REFRESH_MAX_RETRIES,
    ignore_result=True,
)
def sweep_chunk(self, run_id: int, chunk_id: int, first_key: str, last_key: str, throttled: int = 0) -> str:
    """Sync one chunk of a sweep; retryable errors retry with backoff, like the per-course task."""
    if catalog_calls_disabled():
        return "disabled"  # stays pending; the sweep resumes it once calls are allowed again
    client = shared_client(timeout_budget=conf.SWEEP_CHUNK_SOFT_TIME_LIMIT / conf.SWEEP_CHUNK_HTTP_ATTEMPTS)
    throttled_before = client.throttled_responses
    try:
        counters = sync_chunk(first_key, last_key, client)
    except SoftTimeLimitExceeded:
        error: CatalogError = CatalogTimeout(
            f"chunk soft time limit ({conf.SWEEP_CHUNK_SOFT_TIME_LIMIT}s) exceeded"
        )
    except CatalogError as exc:
        error = exc
    except DatabaseError as exc:  # a locked or restarting database is worth a retry, like a 503
        error = CatalogRetryableDatabaseError(f"database error: {exc}")
    else:
        throttled += client.throttled_responses - throttled_before
        finish_chunk(
            run_id, chunk_id, ChunkOutcome(counters, retries=self.request.retries, throttled=throttled)
        )
        return "done"
    throttled += client.throttled_responses - throttled_before
    heartbeat(run_id)  # waiting out a throttle or an outage is not death
    if error.retryable and self.request.retries < conf.REFRESH_MAX_RETRIES:
        countdown = min(
            backoff_delay(
                self.request.retries, base=conf.REFRESH_RETRY_BASE, cap=conf.REFRESH_RETRY_CAP, exc=error
            ),
            conf.REFRESH_RETRY_CAP,
        )
        log.warning(
            "catalog sweep: chunk %s of sweep #%s: %s; retry %d in %.1fs",
            chunk_id,
            run_id,
            error,
            self.request.retries + 1,
            countdown,
        )
        raise self.retry(countdown=countdown, kwargs={"throttled": throttled}, exc=error)
    log.error("catalog sweep: chunk %s of sweep #%s failed: %s", chunk_id, run_id, error)
    finish_chunk(
        run_id,
        chunk_id,
        ChunkOutcome(
            SyncCounters(),
            retries=self.request.retries,
            throttled=throttled,
            error=f"{type(error).__name__}: {error}",
        ),
    )
    return "failed"
