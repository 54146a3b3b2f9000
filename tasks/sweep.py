"""The scheduled full resync on Celery: a coordinator that plans and dispatches chunk tasks."""

from __future__ import annotations

import hashlib
import logging

from django.utils import timezone

import celeryconfig as conf
from catalog.connection import CatalogCallsDisabled, shared_client, why_calls_are_off
from catalog.models import ChunkStatus, SweepChunk
from catalog.retry import RetryPlan
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
from catalog.sync import SyncCounters, failure_text
from catalog_client.errors import CatalogError
from tasks.app import app
from tasks.base import CatalogTask

log = logging.getLogger("tasks.sweep")


@app.task(
    name="catalog_sync.sweep",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=conf.SWEEP_SOFT_TIME_LIMIT,
    time_limit=conf.SWEEP_TIME_LIMIT,
    ignore_result=True,
    bind=True,
)
def sweep(self, trigger: str = "beat", page_size: int | None = None) -> str:
    """Start (or resume) the full resync and dispatch its chunks; returns at once. Single flight:
    a second trigger while a sweep runs is a logged no-op."""
    reason = why_calls_are_off()
    if reason:
        log.info("catalog sweep: no sweep: %s", reason)
        return "disabled"
    run = start_sweep(trigger, page_size=page_size, owner=_owner_token(self.request.id))
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


def _owner_token(task_id: str | None) -> str | None:
    """The run's 32-character owner column holds this coordinator's task id, hashed to fit (a
    redelivered message keeps its id, so it recognises the run its killed execution started)."""
    return hashlib.blake2b(task_id.encode(), digest_size=16).hexdigest() if task_id else None


def _dispatch(run_id: int, chunk) -> None:
    sweep_chunk.apply_async((run_id, chunk.pk, chunk.first_key, chunk.last_key))


@app.task(
    name="catalog_sync.sweep_chunk",
    base=CatalogTask,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=conf.SWEEP_CHUNK_SOFT_TIME_LIMIT,
    time_limit=conf.SWEEP_CHUNK_TIME_LIMIT,
    ignore_result=True,
)
def sweep_chunk(self: CatalogTask, run_id: int, chunk_id: int, first_key: str, last_key: str) -> str:
    """Sync one chunk of a sweep; failures go to the retry rule, like the per-course task's.

    Each failed attempt's cost (catalog requests, 429s, the retry) is added to the chunk row and
    the run at once (``record_attempt``). Giving up finishes the chunk failed, which records the
    failure on its courses' rows."""
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
    started = timezone.now()
    try:
        counters = self.guarded(sync_chunk, first_key, last_key, client)
    except CatalogError as exc:
        error = exc
        cost = {
            "requests": client.requests_made - requests_before,
            "throttled": client.throttled_responses - throttled_before,
        }

        def give_up() -> str:
            log.error("catalog sweep: chunk %s of sweep #%s failed: %s", chunk_id, run_id, error)
            outcome = ChunkOutcome(SyncCounters(), **cost, error=failure_text(error), started_at=started)
            finish_chunk(run_id, chunk_id, outcome)
            return "failed"

        def before_retry(plan: RetryPlan) -> None:
            record_attempt(run_id, chunk_id, **cost, retried=plan.spends)
            log.warning(
                "catalog sweep: chunk %s of sweep #%s: %s; %s in %.1fs",
                chunk_id,
                run_id,
                error,
                f"retry {plan.retries}" if plan.spends else "fleet paused, again (no retry spent)",
                plan.delay,
            )

        return self.retry_or_give_up(error, give_up=give_up, before_retry=before_retry)
    outcome = ChunkOutcome(
        counters,
        requests=client.requests_made - requests_before,
        throttled=client.throttled_responses - throttled_before,
    )
    finish_chunk(run_id, chunk_id, outcome)
    return "done"
