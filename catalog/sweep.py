"""The full resync as durable, resumable work: a ``SweepRun`` split into ``SweepChunk`` ranges.

The database is the record of everything that decides an outcome; the cache plays no part here.

- **Single flight**: the ``SweepRun`` row is the lease. At most one run is ``running`` (a partial
  unique constraint): a trigger INSERTs a running run, and an ``IntegrityError`` means one is
  running already. A running run whose ``heartbeat_at`` is older than
  ``CATALOG_SWEEP_LEASE_TTL`` is dead: the next trigger takes it over with a compare-and-set
  UPDATE (on the old ``heartbeat_at``, so two triggers cannot both win) and *resumes* it.
  Heartbeats are UPDATEs of ``heartbeat_at``; every chunk recorded is one.
- **Checkpoint**: chunks are planned in keyset order over our own overview table and written as
  rows, ``PLAN_BATCH`` at a time, with ``SweepRun.cursor`` = the last key planned. Resuming
  re-dispatches the chunks still pending and plans on from the cursor: nothing starts over.
- **Chunks**: a chunk is a key range ``[first_key, last_key]`` of about ``page_size`` courses,
  synced by one call of ``sync_overviews`` (one catalog request). Finishing a chunk is an UPDATE
  guarded by ``status=pending``, so a chunk run twice (redelivered after a crash, and
  re-dispatched on resume) counts once.
- **Counters and completion**: in the transaction that finishes a chunk, the run's counters are
  added with ``F()`` (so they always equal the sum of the chunk rows, and the admin's progress
  is the truth), then one guarded UPDATE completes the run when planning is done and an indexed
  ``NOT EXISTS`` finds no pending chunk. The run-row UPDATE serialises finishers (a row lock on
  PostgreSQL, the write lock on SQLite), so the last one sees every other chunk finished and
  exactly one finisher completes the run (``WHERE status='running'``).
- **Cost**: every attempt's catalog requests (token requests, 429s and failed attempts too) and
  retries are added to its chunk row and the run as the attempt ends (``record_attempt``).
- **Never stranded**: an in-process sweep that stops, for whatever reason (a chunk that keeps
  failing, an exception, Ctrl-C), marks its run failed and its pending chunks ``cancelled``
  (``stop_run``): the lease is free at once and no chunk stays pending.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connections, transaction
from django.db.models import Case, CharField, Count, Exists, F, OuterRef, Q, Sum, Value, When
from django.db.models.functions import Cast
from django.utils import timezone

from catalog.models import ChunkStatus, SweepChunk, SweepRun, SweepStatus, current_config
from catalog.sync import (
    CatalogSource,
    Fetched,
    SyncCounters,
    SyncRow,
    apply_runs,
    fetch_runs,
    read_rows,
    sync_overviews,
)
from catalog_client.client import split_keys_for_urls
from catalog_client.errors import CatalogError
from observability import logcontext
from observability.metrics import count_sweep_chunk
from overviews.models import CourseOverview

log = logging.getLogger("catalog.sweep")

PLAN_BATCH = 20  # chunks planned per query

# SweepRun course counter <- SweepChunk field
_COURSE_COUNTERS = {
    "courses_seen": "seen",
    "courses_updated": "updated",
    "courses_unchanged": "unchanged",
    "courses_missing": "missing",
    "courses_refused": "refused",
    "courses_errored": "errored",
    "courses_superseded": "superseded",
}
# SweepRun cost counter <- SweepChunk field
_COST_COUNTERS = {"catalog_requests": "catalog_requests", "retries": "retries", "throttled": "throttled"}


class SweepTakenOver(Exception):
    """This process's run was taken over by another trigger (its heartbeat had gone stale)."""


def lease_ttl() -> timedelta:
    """Without a heartbeat for this long, a running sweep is dead (read at each use: tests and
    operators change it)."""
    return timedelta(seconds=float(getattr(settings, "CATALOG_SWEEP_LEASE_TTL", 600)))


# Seconds, as configured when this module was imported (celeryconfig's time limits are checked
# against it); the lease itself reads ``lease_ttl()`` at each use.
LEASE_TTL = lease_ttl().total_seconds()


def running_run() -> SweepRun | None:
    return SweepRun.objects.filter(status=SweepStatus.RUNNING).first()


def lease_holder() -> str | None:
    """``run:<id>`` of the running sweep (alive or not yet taken over), else None."""
    run = running_run()
    return f"run:{run.pk}" if run is not None else None


def start_sweep(trigger: str, *, page_size: int | None = None, in_process: bool = False) -> SweepRun | None:
    """Take the lease and return the run to work on (a dead one resumed, or a new one); None
    when another sweep is running. The returned run's ``owner`` is this caller's token."""
    owner = uuid.uuid4().hex
    now = timezone.now()
    run = running_run()
    if run is None:
        try:
            with transaction.atomic():
                run = SweepRun.objects.create(
                    trigger=trigger,
                    page_size_override=page_size,
                    in_process=in_process,
                    heartbeat_at=now,
                    owner=owner,
                )
        except IntegrityError:  # another trigger inserted its running run first
            log.info("catalog sweep: not started (%s): a sweep is running (%s)", trigger, lease_holder())
            return None
        logcontext.bind(sweep_id=run.pk)  # this process's log lines from here name the sweep
        log.info("catalog sweep: sweep #%s started (%s)", run.pk, trigger)
        return run
    if run.heartbeat_at is not None and run.heartbeat_at > now - lease_ttl():
        log.info("catalog sweep: not started (%s): sweep #%s is running", trigger, run.pk)
        return None
    return _take_over(run, owner, now, trigger)


def _take_over(run: SweepRun, owner: str, now, trigger: str) -> SweepRun | None:
    """Resume a dead run: compare-and-set on the heartbeat it was last seen with, so of two
    triggers (or a late heartbeat) exactly one wins. The counters are summed afresh from the
    chunk rows under the run's row lock (a run recorded by an older version kept them lazily)."""
    with transaction.atomic():
        taken = SweepRun.objects.filter(
            pk=run.pk, status=SweepStatus.RUNNING, heartbeat_at=run.heartbeat_at
        ).update(owner=owner, heartbeat_at=now, resumed=F("resumed") + 1)
        if not taken:
            log.info("catalog sweep: not started (%s): sweep #%s was resumed or heartbeat", trigger, run.pk)
            return None
        _reconcile(run.pk)
    run.refresh_from_db()
    logcontext.bind(sweep_id=run.pk)
    log.warning(
        "catalog sweep: resuming sweep #%s from %r (%s chunks planned, %s done)",
        run.pk,
        run.cursor,
        run.chunks_total,
        run.chunks_done,
    )
    if complete_if_done(run.pk):  # every chunk had in fact finished: done now
        run.refresh_from_db()
    return run


def _reconcile(run_id: int) -> None:
    """Set the run's counters to the sum of its chunk rows. Call inside a transaction that has
    already written the run row (it holds the row lock: no finisher's ``F()`` add is lost)."""
    chunks = SweepChunk.objects.filter(run_id=run_id)
    sums = chunks.aggregate(
        **{field: Sum(chunk_field, default=0) for field, chunk_field in _COURSE_COUNTERS.items()},
        **{field: Sum(chunk_field, default=0) for field, chunk_field in _COST_COUNTERS.items()},
        chunks_done=Count("pk", filter=Q(status__in=[ChunkStatus.DONE, ChunkStatus.FAILED])),
        chunks_failed=Count("pk", filter=Q(status=ChunkStatus.FAILED)),
        chunks_total=Count("pk"),
    )
    SweepRun.objects.filter(pk=run_id).update(**sums)


def heartbeat(run_id: int, owner: str | None = None) -> bool:
    """Mark the run alive. With ``owner``: only if that caller still coordinates it. False: the
    run is no longer running (or was taken over)."""
    runs = SweepRun.objects.filter(pk=run_id, status=SweepStatus.RUNNING)
    if owner is not None:
        runs = runs.filter(owner=owner)
    return bool(runs.update(heartbeat_at=timezone.now()))


def abandon(run: SweepRun) -> None:
    """A coordinator that crashed: clear its heartbeat so the next trigger resumes the run at
    once instead of after the TTL (chunk tasks still running heartbeat it again meanwhile)."""
    SweepRun.objects.filter(pk=run.pk, status=SweepStatus.RUNNING, owner=run.owner).update(heartbeat_at=None)


def page_size_for(run: SweepRun) -> int:
    """The run's override, else the admin's current page size (read anew for every batch)."""
    return run.page_size_override or current_config().page_size


def pending_chunks(run: SweepRun) -> list[SweepChunk]:
    return list(run.chunks.filter(status=ChunkStatus.PENDING).order_by("seq"))


def plan_chunks(
    run: SweepRun, *, page_size: Callable[[SweepRun], int] = page_size_for
) -> Iterator[list[SweepChunk]]:
    """Plan the rest of the run, ``PLAN_BATCH`` chunks a step, checkpointing the cursor.

    Each step is also a heartbeat by the run's owner; raises ``SweepTakenOver`` when another
    trigger has taken the run over (nothing of this step is then written)."""
    while not run.planning_done:
        size = page_size(run)
        keys_qs = CourseOverview.objects.order_by("id")
        if run.cursor:
            keys_qs = keys_qs.filter(id__gt=run.cursor)
        # the stored strings: parsing 100,000 keys only to print them again is pure cost
        keys = list(keys_qs.values_list(Cast("id", output_field=CharField()), flat=True)[: size * PLAN_BATCH])
        chunks = [
            SweepChunk(
                run=run, seq=run.chunks_total + i, first_key=group[0], last_key=group[-1], size=len(group)
            )
            for i, group in enumerate(_one_request_groups(keys, size))
        ]
        cursor = keys[-1] if keys else run.cursor
        planning_done = len(keys) < size * PLAN_BATCH
        with transaction.atomic():
            # the run row first: its lock orders this step before any finisher that could
            # otherwise miss the planning_done it sets (and it checks the owner)
            if not SweepRun.objects.filter(pk=run.pk, status=SweepStatus.RUNNING, owner=run.owner).update(
                cursor=cursor,
                chunks_total=F("chunks_total") + len(chunks),
                planning_done=planning_done,
                heartbeat_at=timezone.now(),
            ):
                raise SweepTakenOver(f"sweep #{run.pk} is no longer this process's to plan")
            chunks = SweepChunk.objects.bulk_create(chunks)
        run.cursor, run.planning_done = cursor, planning_done
        run.chunks_total += len(chunks)
        if chunks:
            yield chunks
    complete_if_done(run.pk)  # the last chunks may have finished before planning_done was set


def _one_request_groups(keys: list[str], size: int) -> Iterator[list[str]]:
    """Groups of at most ``size`` keys, each small enough for one catalog request (one URL under
    ``max_url_length``): a chunk is then one request, never retried all or nothing."""
    api_url = settings.CATALOG_API_URL
    if api_url and not api_url.endswith("/"):
        api_url += "/"  # as the client normalises it
    max_url_length = current_config().max_url_length
    for start in range(0, len(keys), size):
        group = keys[start : start + size]
        if api_url:
            yield from split_keys_for_urls(api_url, group, max_url_length)
        else:  # no catalog configured (the chunks will fail to fetch anyway)
            yield group


def chunk_overviews(first_key: str, last_key: str) -> list[SyncRow]:
    """The chunk's rows now: courses added to the range since planning are included."""
    return read_rows(CourseOverview.objects.filter(id__gte=first_key, id__lte=last_key).order_by("id"))


def sync_chunk(first_key: str, last_key: str, client: CatalogSource) -> SyncCounters:
    """Sync one chunk's courses: one bulk fetch, one guarded bulk write. Raises ``CatalogError``."""
    return sync_overviews(chunk_overviews(first_key, last_key), client).counters


@dataclass
class ChunkOutcome:
    """The attempt that ended a chunk: its courses' counters, or the error that failed it, and
    that attempt's own cost (earlier attempts' costs were added by ``record_attempt``)."""

    counters: SyncCounters
    requests: int | None = None  # catalog requests of this attempt; None: counters.catalog_requests
    retries: int = 0
    throttled: int = 0
    error: str = ""


def record_attempt(
    run_id: int, chunk_id: int, *, requests: int, throttled: int = 0, retried: bool = False
) -> None:
    """Add a failed attempt's cost to its chunk and its run, in one transaction (``F()``: two
    processes adding at once both count). Counted whatever the chunk's status: the requests were
    sent. Also a heartbeat: waiting out a throttle or an outage is not death."""
    cost = {"catalog_requests": requests, "throttled": throttled, "retries": int(retried)}
    with transaction.atomic():
        SweepChunk.objects.filter(pk=chunk_id).update(**{f: F(f) + n for f, n in cost.items()})
        SweepRun.objects.filter(pk=run_id).update(
            heartbeat_at=timezone.now(), **{f: F(f) + n for f, n in cost.items()}
        )


def finish_chunk(run_id: int, chunk_id: int, outcome: ChunkOutcome, *, may_complete: bool = True) -> bool:
    """Record a chunk's result once, add it to the run's counters and complete the run if this
    was the last chunk, in one transaction. False if the chunk was no longer pending (a duplicate
    run, or its run was stopped): its result is dropped, its cost still counted.
    ``may_complete=False``: the caller stops the run next (``stop_run`` says why)."""
    c = outcome.counters
    requests = c.catalog_requests if outcome.requests is None else outcome.requests
    failed = bool(outcome.error)
    now = timezone.now()
    with transaction.atomic():
        written = SweepChunk.objects.filter(
            pk=chunk_id, status=ChunkStatus.PENDING
        ).update(
            status=ChunkStatus.FAILED if failed else ChunkStatus.DONE,
            finished_at=now,
            seen=c.seen,
            updated=c.updated,
            unchanged=c.unchanged,
            missing=c.missing,
            refused=c.refused,
            errored=F("size") if failed else c.errored,  # a failed chunk: all its courses
            superseded=c.superseded,
            catalog_requests=F("catalog_requests") + requests,
            retries=F("retries") + outcome.retries,
            throttled=F("throttled") + outcome.throttled,
            error=outcome.error[:2000],
        )
        if not written:
            log.info(
                "catalog sweep: chunk %s of sweep #%s was already finished; result dropped", chunk_id, run_id
            )
        else:
            count_sweep_chunk("failed" if failed else "done")  # catalog_sync_sweep_chunks_total
            courses = {
                "courses_seen": c.seen,
                "courses_updated": c.updated,
                "courses_unchanged": c.unchanged,
                "courses_missing": c.missing,
                "courses_refused": c.refused,
                "courses_errored": c.errored,
                "courses_superseded": c.superseded,
            }
            if failed:  # the chunk's size, read in this transaction (a failed attempt counted none)
                courses["courses_errored"] = SweepChunk.objects.values_list("size", flat=True).get(
                    pk=chunk_id
                )
            SweepRun.objects.filter(pk=run_id).update(
                heartbeat_at=now,
                chunks_done=F("chunks_done") + 1,
                chunks_failed=F("chunks_failed") + int(failed),
                catalog_requests=F("catalog_requests") + requests,
                retries=F("retries") + outcome.retries,
                throttled=F("throttled") + outcome.throttled,
                **{field: F(field) + n for field, n in courses.items() if n},
            )
            if may_complete:
                complete_if_done(run_id)
    if not written:
        record_attempt(run_id, chunk_id, requests=requests, throttled=outcome.throttled, retried=False)
    return bool(written)


def complete_if_done(run_id: int) -> bool:
    """Complete the run if planning is done and no chunk is pending: one guarded UPDATE, so of
    two finishers only one completes it. True if this call completed it."""
    no_pending = ~Exists(SweepChunk.objects.filter(run_id=OuterRef("pk"), status=ChunkStatus.PENDING))
    completed = (
        SweepRun.objects.filter(pk=run_id, status=SweepStatus.RUNNING, planning_done=True)
        .filter(no_pending)
        .update(
            status=Case(
                When(chunks_failed=0, then=Value(SweepStatus.COMPLETE)),
                When(chunks_failed__gte=F("chunks_total"), then=Value(SweepStatus.FAILED)),
                default=Value(SweepStatus.PARTIAL),
            ),
            finished_at=timezone.now(),
        )
    )
    if completed:
        transaction.on_commit(lambda: _log_finished(run_id))
    return bool(completed)


def _log_finished(run_id: int) -> None:
    run = SweepRun.objects.get(pk=run_id)
    log.info(
        "catalog sweep: sweep #%s %s: seen=%s updated=%s unchanged=%s missing=%s refused=%s "
        "errored=%s superseded=%s requests=%s retries=%s throttled=%s chunks=%s failed_chunks=%s",
        run.pk,
        run.status,
        run.courses_seen,
        run.courses_updated,
        run.courses_unchanged,
        run.courses_missing,
        run.courses_refused,
        run.courses_errored,
        run.courses_superseded,
        run.catalog_requests,
        run.retries,
        run.throttled,
        run.chunks_total,
        run.chunks_failed,
    )


def stop_run(run: SweepRun, error: str) -> SweepRun:
    """A sweep that cannot go on: mark it failed and its pending chunks ``cancelled`` (with the
    reason), so the lease is free at once and no chunk stays pending. What was written stays.
    Only the run's owner stops it (a run taken over meanwhile is the new owner's)."""
    now = timezone.now()
    with transaction.atomic():
        # chunks first, then the run: the order finish_chunk locks them in, so the two never
        # deadlock on PostgreSQL (a chunk being finished meanwhile is waited for, then skipped)
        SweepChunk.objects.filter(
            run_id=run.pk, status=ChunkStatus.PENDING, run__status=SweepStatus.RUNNING, run__owner=run.owner
        ).update(status=ChunkStatus.CANCELLED, finished_at=now, error=f"not run: sweep #{run.pk} stopped")
        stopped = SweepRun.objects.filter(pk=run.pk, status=SweepStatus.RUNNING, owner=run.owner).update(
            status=SweepStatus.FAILED, finished_at=now, error=error[:2000]
        )
    if stopped:
        log.error("catalog sweep: sweep #%s stopped: %s", run.pk, error)
    run.refresh_from_db()
    return run


@dataclass
class _Attempt:
    """One fetch of a chunk and what it cost."""

    fetched: Fetched | None
    error: CatalogError | None
    requests: int
    throttled: int


def run_in_process(
    run: SweepRun,
    client: CatalogSource,
    *,
    attempts: int,
    sleep: Callable[[float], None],
    backoff: Callable[[int, BaseException], float],
    on_chunk: Callable[[SweepChunk, SyncCounters], None] | None = None,
) -> SweepRun:
    """The same sweep, run in this process chunk by chunk (``sync_catalog`` without --async).

    Pipelined: while this thread reads, compares and writes chunk k, a second thread already
    fetches chunk k+1 from the catalog, so the catalog's latency overlaps our own work. A chunk
    whose fetch failed is retried here, synchronously; one that keeps failing stops the sweep
    (what earlier chunks wrote stays). Fetches hold a lock, so each one's cost (the client's
    ``requests_made`` before and after) is exactly its own. Whatever ends this function early
    (a failed chunk, an exception, KeyboardInterrupt) leaves the run stopped, never running.
    """
    fetch_lock = threading.Lock()

    def fetch(rows: list[SyncRow]) -> _Attempt:
        with fetch_lock:
            requests, throttled = client.requests_made, getattr(client, "throttled_responses", 0)
            try:
                fetched, error = fetch_runs(rows, client), None
            except CatalogError as exc:
                fetched, error = None, exc
            return _Attempt(
                fetched,
                error,
                client.requests_made - requests,
                getattr(client, "throttled_responses", 0) - throttled,
            )

    def chunks() -> Iterator[SweepChunk]:
        yield from pending_chunks(run)
        yield from (chunk for batch in plan_chunks(run) for chunk in batch)

    def complete(chunk: SweepChunk, rows: list[SyncRow], fetching: Future[_Attempt]) -> bool:
        attempt, retries = fetching.result(), 0
        while attempt.error is not None:
            exc = attempt.error
            if not exc.retryable or retries + 1 >= attempts:
                error = (
                    f"chunk {chunk.seq} ({chunk.first_key}..) failed after {retries + 1} attempt(s): "
                    f"{type(exc).__name__}: {exc}"
                )
                finish_chunk(
                    run.pk,
                    chunk.pk,
                    ChunkOutcome(SyncCounters(), attempt.requests, throttled=attempt.throttled, error=error),
                    may_complete=False,
                )
                stop_run(run, error)
                return False
            record_attempt(
                run.pk, chunk.pk, requests=attempt.requests, throttled=attempt.throttled, retried=True
            )
            delay = backoff(retries, exc)
            retries += 1
            log.warning("catalog sweep: chunk %s: %s; retrying in %.1fs", chunk.seq, exc, delay)
            sleep(delay)
            if not heartbeat(run.pk, run.owner):  # a long wait: another trigger may own it now
                raise SweepTakenOver(f"sweep #{run.pk} was taken over while chunk {chunk.seq} waited")
            attempt = fetch(rows)
        counters = apply_runs(rows, attempt.fetched).counters
        finish_chunk(
            run.pk, chunk.pk, ChunkOutcome(counters, attempt.requests, throttled=attempt.fetched.throttled)
        )
        if on_chunk:
            on_chunk(chunk, counters)
        return True

    fetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog-fetch")
    in_flight: tuple[SweepChunk, list[SyncRow], Future[_Attempt]] | None = None
    following: tuple[SweepChunk, list[SyncRow], Future[_Attempt]] | None = None
    try:
        for chunk in chunks():
            rows = chunk_overviews(chunk.first_key, chunk.last_key)
            following = (chunk, rows, fetcher.submit(fetch, rows))
            if in_flight is not None and not complete(*in_flight):
                _count_unused(run, following)
                run.refresh_from_db()
                return run
            in_flight, following = following, None
        if in_flight is not None and not complete(*in_flight):
            return run
        complete_if_done(run.pk)
        run.refresh_from_db()
        if run.status == SweepStatus.RUNNING:  # cannot happen unless chunks were added behind us
            stop_run(run, "the in-process sweep ended with chunks still pending")
        return run
    except SweepTakenOver as exc:
        log.warning("catalog sweep: %s; this process stops", exc)
        run.refresh_from_db()
        return run
    except BaseException as exc:  # an error or KeyboardInterrupt: free the lease before re-raising
        stop_run(run, f"interrupted: {type(exc).__name__}: {exc}")
        if following is not None:
            _count_unused(run, following)
        raise
    finally:
        fetcher.submit(connections.close_all)  # the fetch thread's own connections (rate table)
        fetcher.shutdown(wait=True)


def _count_unused(run: SweepRun, prefetched: tuple[SweepChunk, list[SyncRow], Future[_Attempt]]) -> None:
    """A prefetched chunk whose result will not be used (the sweep stopped): its requests were
    sent all the same, so they are counted on its (cancelled) row."""
    chunk, _, future = prefetched
    try:
        attempt = future.result()
    except BaseException:
        return
    record_attempt(run.pk, chunk.pk, requests=attempt.requests, throttled=attempt.throttled)
