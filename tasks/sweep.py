"""The scheduled full resync on Celery: a coordinator that chooses the strategy, then plans and
dispatches chunk tasks (keys-batched), or hands the run to the walk task, which walks the catalog's
list page by page and then plans and dispatches the repair's chunk tasks (walk + repair).

The walk is one sequence of pages (each page's size depends on the last one's time), so it runs
in one task at a time: ``sweep_walk`` walks for at most ``WALK_TASK_SECONDS``, checkpointing every
page on the run row, then sends itself again (a long throttle wait too: it re-enqueues itself
with the wait as its countdown instead of sleeping). A worker that dies mid-walk loses at most the
page in flight: the redelivered message, or the next trigger's takeover, resumes from the
checkpoint. The repair's chunks are shared across workers like keys-batched chunks."""

from __future__ import annotations

import hashlib
import logging

from django.utils import timezone

import celeryconfig as conf
from catalog.connection import CatalogCallsDisabled, shared_client, why_calls_are_off
from catalog.models import ChunkStatus, SweepChunk, SweepRun, SweepStatus
from catalog.retry import RetryPlan
from catalog.sweep import (
    ChunkOutcome,
    SweepTakenOver,
    abandon,
    decide_strategy,
    finish_chunk,
    pending_chunks,
    plan_chunks,
    record_attempt,
    start_sweep,
    sync_chunk,
)
from catalog.sync import SyncCounters, failure_text
from catalog.walk import AUTO, KEYS, WALK, walk
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
def sweep(self, trigger: str = "beat", page_size: int | None = None, strategy: str | None = None) -> str:
    """Start (or resume) the full resync and dispatch its work; returns at once. Single flight:
    a second trigger while a sweep runs is a logged no-op. ``strategy``: keys or walk (else the
    admin's ``sweep_strategy``; auto chooses by estimate)."""
    reason = why_calls_are_off()
    if reason:
        log.info("catalog sweep: no sweep: %s", reason)
        return "disabled"
    run = start_sweep(trigger, page_size=page_size, owner=_owner_token(self.request.id))
    if run is None:
        return "already-running"
    try:
        if not run.strategy:
            try:
                client = _sweep_client()
            except CatalogCallsDisabled as exc:
                log.info("catalog sweep: sweep #%s waits: %s", run.pk, exc)
                abandon(run)
                return "disabled"
            run = decide_strategy(run, client, forced=strategy if strategy in (AUTO, KEYS, WALK) else None)
        if run.strategy == WALK and not run.walk_done:
            sweep_walk.apply_async((run.pk, run.owner))
            log.info("catalog sweep: sweep #%s walks the catalog's list (task sent)", run.pk)
            return f"sweep #{run.pk}: walking"
        dispatched = _dispatch_all(run)
    except SweepTakenOver as exc:
        log.warning("catalog sweep: %s; this coordinator stops", exc)
        return "taken-over"
    except BaseException:
        abandon(run)  # the next trigger resumes it at once, from its checkpoint
        raise
    log.info("catalog sweep: sweep #%s dispatched %d chunk(s)", run.pk, dispatched)
    return f"sweep #{run.pk}: {dispatched} chunk(s)"


def _dispatch_all(run) -> int:
    """Dispatch the run's pending chunks (a resumed run: chunks lost with a dead worker are
    redone), then plan and dispatch the rest. Raises ``SweepTakenOver``."""
    dispatched = 0
    for chunk in pending_chunks(run):
        _dispatch(run.pk, chunk)
        dispatched += 1
    for batch in plan_chunks(run):  # completes the run at the end if every chunk is done
        for chunk in batch:
            _dispatch(run.pk, chunk)
        dispatched += len(batch)
    return dispatched


# Seconds of walking per ``sweep_walk`` message, well inside its soft time limit; then it sends
# itself again, so a dead worker costs one page and a long walk never meets the time limit.
WALK_TASK_SECONDS = 60.0
# A retry wait longer than this is not slept in the worker: the walk re-enqueues itself with it.
WALK_LONGEST_SLEEP = 30.0


@app.task(
    name="catalog_sync.sweep_walk",
    base=CatalogTask,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=conf.SWEEP_CHUNK_SOFT_TIME_LIMIT,
    time_limit=conf.SWEEP_CHUNK_TIME_LIMIT,
    ignore_result=True,
)
def sweep_walk(self: CatalogTask, run_id: int, owner: str, retries: int = 0) -> str:
    """Walk the catalog's list for a walk + repair run, from its checkpoint, for at most
    ``WALK_TASK_SECONDS``; then go on in a new message, or, at the end of the walk, plan and
    dispatch the repair's chunks. Only the run's owner walks: a message of a run taken over (a
    new coordinator owns it and sent its own walk) stops at once. ``retries``: spent on the page
    the last message paused at (a page that keeps failing ends the walk across messages too)."""
    run = SweepRun.objects.filter(pk=run_id, status=SweepStatus.RUNNING, owner=owner).first()
    if run is None:
        log.info("catalog sweep: walk of sweep #%s not run: the sweep ended or was taken over", run_id)
        return "not-ours"
    try:
        if not run.walk_done:
            try:
                client = _sweep_client()
            except CatalogCallsDisabled as exc:
                # the run's heartbeat goes stale; the next trigger takes it over once calls are back
                log.info("catalog sweep: walk of sweep #%s waits: %s", run_id, exc)
                return "disabled"
            result = self.guarded(
                walk,
                run,
                client,
                policy=self.retry_policy,
                longest_wait=WALK_LONGEST_SLEEP,
                time_budget=WALK_TASK_SECONDS,
                retries=retries,
            )
            if not result.done:
                sweep_walk.apply_async((run_id, owner, result.retries), countdown=result.pause or None)
                return f"walked {result.pages} page(s); going on"
            run.refresh_from_db()
        dispatched = _dispatch_all(run)
    except SweepTakenOver as exc:
        log.warning("catalog sweep: %s; this walk stops", exc)
        return "taken-over"
    except CatalogError as exc:  # the soft time limit, or our database: go on from the checkpoint
        log.warning("catalog sweep: walk of sweep #%s: %s; going on in a new message", run_id, exc)
        sweep_walk.apply_async((run_id, owner), countdown=WALK_LONGEST_SLEEP)
        return "interrupted; going on"
    except BaseException:  # the broker down while dispatching the repair, a bug: the next trigger
        abandon(run)  # resumes the run at once, from its checkpoint (as a coordinator's failure)
        raise
    log.info("catalog sweep: sweep #%s walked its list; dispatched %d repair chunk(s)", run_id, dispatched)
    return f"sweep #{run_id}: walked; {dispatched} repair chunk(s)"


def _sweep_client():
    """This process's catalog client for the sweep's tasks: each call's deadline is the chunk's soft
    time limit shared by its HTTP attempts. Raises ``CatalogCallsDisabled``."""
    return shared_client(timeout_budget=conf.SWEEP_CHUNK_SOFT_TIME_LIMIT / conf.SWEEP_CHUNK_HTTP_ATTEMPTS)


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
    pending = (
        SweepChunk.objects.filter(pk=chunk_id, status=ChunkStatus.PENDING)
        .values_list("run__strategy", "run__walk_started_at", "run__walk_finished_at")
        .first()
    )
    if pending is None:
        log.info("catalog sweep: chunk %s of sweep #%s already finished; not run again", chunk_id, run_id)
        return "already-finished"
    since = (pending[1], pending[2]) if pending[0] == WALK else None  # a repair: rows its walk did not check
    try:
        client = _sweep_client()
    except CatalogCallsDisabled as exc:
        log.info("catalog sweep: chunk %s of sweep #%s not run: %s", chunk_id, run_id, exc)
        return "disabled"  # stays pending; the next trigger resumes the sweep once calls are back
    requests_before, throttled_before = client.requests_made, client.throttled_responses
    started = timezone.now()
    try:
        counters = self.guarded(sync_chunk, first_key, last_key, client, since)
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
