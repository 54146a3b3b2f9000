"""The scheduled full resync on Celery: a coordinator that plans and dispatches chunk tasks."""

from __future__ import annotations

import logging

from celery.exceptions import SoftTimeLimitExceeded
from django.db import DatabaseError

import celeryconfig as conf
from catalog.connection import CatalogCallsDisabled, shared_client, why_calls_are_off
from catalog.models import ChunkStatus, SweepChunk
from catalog.retry import next_retry
from catalog.sweep import (
    ChunkOutcome,
    SweepTakenOver,
    abandon,
    finish_chunk,
    pending_chunks,
    plan_chunks,
    record_attempt,
    start_sweep,
    sync_chunk,
)
from catalog.sync import SyncCounters
from catalog_client.errors import CatalogError, CatalogTimeout
from tasks.app import app
from tasks.refresh import TransientDatabaseError

log = logging.getLogger("tasks.sweep")


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
    reason = why_calls_are_off()
    if reason:
        log.info("catalog sweep: no sweep: %s", reason)
        return "disabled"
    run = start_sweep(trigger, page_size=page_size)
    if run is None:
        return "already-running"
    dispatched = 0
    try:
        for chunk in pending_chunks(run):  # a resumed run: chunks lost with a dead worker are redone
            _dispatch(run.pk, chunk)
            dispatched += 1
        for batch in plan_chunks(run):  # completes the run at the end if every chunk is done
            for chunk in batch:
                _dispatch(run.pk, chunk)
            dispatched += len(batch)
    except SweepTakenOver as exc:
        log.warning("catalog sweep: %s; this coordinator stops", exc)
        return "taken-over"
    except BaseException:
        abandon(run)  # the next trigger resumes it at once, from its checkpoint
        raise
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
    max_retries=None,  # counted in `retries` by catalog.retry.next_retry (pauses spend none)
    ignore_result=True,
)
def sweep_chunk(
    self, run_id: int, chunk_id: int, first_key: str, last_key: str, retries: int = 0, throttled: int = 0
) -> str:
    """Sync one chunk of a sweep; retryable errors retry with backoff, like the per-course task.

    ``retries`` is the retry policy's budget spent so far (fleet pauses spend none). Each failed
    attempt's cost (catalog requests, 429s, the retry) is added to the chunk row and the run at
    once (``record_attempt``); ``throttled`` is accepted from messages queued by older versions
    and otherwise unused."""
    if not SweepChunk.objects.filter(pk=chunk_id, status=ChunkStatus.PENDING).exists():
        log.info("catalog sweep: chunk %s of sweep #%s already finished; not run again", chunk_id, run_id)
        return "already-finished"
    try:
        client = shared_client(
            timeout_budget=conf.SWEEP_CHUNK_SOFT_TIME_LIMIT / conf.SWEEP_CHUNK_HTTP_ATTEMPTS
        )
    except CatalogCallsDisabled as exc:
        log.info("catalog sweep: chunk %s of sweep #%s not run: %s", chunk_id, run_id, exc)
        return "disabled"  # stays pending; the next trigger resumes the sweep once calls are back
    requests_before, throttled_before = client.requests_made, client.throttled_responses
    error: CatalogError
    try:
        counters = sync_chunk(first_key, last_key, client)
    except SoftTimeLimitExceeded:
        error = CatalogTimeout(f"chunk soft time limit ({conf.SWEEP_CHUNK_SOFT_TIME_LIMIT}s) exceeded")
    except CatalogError as exc:
        error = exc
    except DatabaseError as exc:  # a locked or restarting database is worth a retry, like a 503
        error = TransientDatabaseError(f"database error: {exc}")
    else:
        outcome = ChunkOutcome(
            counters,
            requests=client.requests_made - requests_before,
            throttled=client.throttled_responses - throttled_before,
        )
        finish_chunk(run_id, chunk_id, outcome)
        return "done"
    requests = client.requests_made - requests_before
    throttled = client.throttled_responses - throttled_before
    plan = next_retry(error, retries, conf.REFRESH_RETRY_POLICY)
    if plan is not None:
        countdown, spent = plan
        record_attempt(run_id, chunk_id, requests=requests, throttled=throttled, retried=spent > retries)
        log.warning(
            "catalog sweep: chunk %s of sweep #%s: %s; retry %d in %.1fs",
            chunk_id,
            run_id,
            error,
            spent,
            countdown,
        )
        raise self.retry(countdown=countdown, kwargs={"retries": spent}, exc=error)
    log.error("catalog sweep: chunk %s of sweep #%s failed: %s", chunk_id, run_id, error)
    outcome = ChunkOutcome(
        SyncCounters(), requests=requests, throttled=throttled, error=f"{type(error).__name__}: {error}"
    )
    finish_chunk(run_id, chunk_id, outcome)
    return "failed"
