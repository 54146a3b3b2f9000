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
- **Counters**: ``catalog.models.SWEEP_COUNTERS``, declared once; a failed chunk counts all its
  courses ``errored`` and records the failure on their rows (``record_failure``).
- **In process**: ``run_in_process`` (``sync_catalog``) runs the same chunks here, pipelined,
  retrying by the one retry rule (``catalog.retry.next_retry``); ``dry_run`` is the same driver
  with a record kept in memory only (``sync_catalog --dry-run``: no overview written, no run).
- **Never stranded**: an in-process sweep that stops, for whatever reason (a chunk that keeps
  failing, an exception, Ctrl-C), marks its run failed and its pending chunks ``cancelled``
  (``stop_run``): the lease is free at once and no chunk stays pending.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connections, transaction
from django.db.models import Case, CharField, Count, Exists, F, OuterRef, Q, Sum, Value, When
from django.db.models.functions import Cast
from django.utils import timezone

from catalog.connection import catalog_api_url
from catalog.models import (
    COST_COUNTERS,
    COURSE_COUNTERS,
    RUN_COUNTER_FIELDS,
    SWEEP_COUNTERS,
    ChunkStatus,
    SweepChunk,
    SweepRun,
    SweepStatus,
    current_config,
)
from catalog.retry import RetryPolicy, next_retry
from catalog.sync import (
    CatalogSource,
    Change,
    Fetched,
    SyncCounters,
    SyncRow,
    apply_runs,
    fetch_runs,
    read_rows,
    record_failure,
    sync_overviews,
)
from catalog.walk import KEYS, WALK, Choice, SweepTakenOver, choose_strategy, lms_facts, unchecked_since, walk
from catalog_client.client import split_keys_for_urls
from catalog_client.errors import CatalogError
from observability import logcontext
from observability.metrics import count_sweep_chunk
from overviews.models import CourseOverview

log = logging.getLogger("catalog.sweep")

PLAN_BATCH = 20  # chunks planned per query


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


def start_sweep(
    trigger: str, *, page_size: int | None = None, in_process: bool = False, owner: str | None = None
) -> SweepRun | None:
    """Take the lease and return the run to work on (a dead one resumed, or a new one); None
    when another sweep is running. The returned run's ``owner`` is this caller's token.

    ``owner`` (the coordinator task's id) lets a redelivered coordinator take over the run its
    own killed execution started, at once: that execution is not running any more, this one is.
    Without it, a coordinator SIGKILLed mid-planning and redelivered at once (RabbitMQ) found
    its own fresh heartbeat, said "already running", and the run waited for the next trigger."""
    owner = owner or uuid.uuid4().hex
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
    if run.owner == owner:  # our own earlier execution, killed: resume now
        return _take_over(run, owner, now, trigger)
    if run.heartbeat_at is not None and run.heartbeat_at > now - lease_ttl():
        log.info("catalog sweep: not started (%s): sweep #%s is running", trigger, run.pk)
        return None
    return _take_over(run, owner, now, trigger)


def decide_strategy(run: SweepRun, client: CatalogSource, *, forced: str | None = None) -> SweepRun:
    """Choose the run's strategy once (a resumed run keeps its own): ``forced`` (``--strategy``:
    keys, walk or auto), else the admin's ``sweep_strategy``; auto compares the two request
    estimates (``catalog.walk.choose_strategy``). The probe's requests count on the run; the choice, its
    reason and the estimates are recorded on it and logged."""
    if run.strategy:
        return run
    if run.chunks_total:  # a run resumed from a version without strategies: it planned keys
        SweepRun.objects.filter(pk=run.pk, strategy="").update(strategy=KEYS, strategy_reason="resumed")
        run.refresh_from_db()
        return run
    config = current_config()
    wanted = forced or config.sweep_strategy
    wanted = wanted if wanted in (KEYS, WALK) else None  # auto: by estimate
    facts = lms_facts()
    choice: Choice = choose_strategy(
        client, facts=facts, page_size=page_size_for(run), config=config, forced=wanted
    )
    SweepRun.objects.filter(pk=run.pk, strategy="").update(
        strategy=choice.strategy,
        strategy_reason=choice.reason[:200],
        catalog_count=choice.catalog_count,
        estimate_keys=choice.estimate_keys,
        estimate_walk=choice.estimate_walk,
        catalog_requests=F("catalog_requests") + choice.probe_requests,
        heartbeat_at=timezone.now(),
    )
    run.refresh_from_db()
    log.info(
        "catalog sweep: sweep #%s strategy=%s (%s) lms_courses=%s catalog_count=%s estimate_keys=%s "
        "estimate_walk=%s",
        run.pk,
        run.strategy,
        run.strategy_reason,
        facts.courses,
        run.catalog_count,
        run.estimate_keys,
        run.estimate_walk,
    )
    return run


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
        if not run.strategy:  # a run of a version that kept its counters lazily
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
        **{RUN_COUNTER_FIELDS[name]: Sum(name, default=0) for name in SWEEP_COUNTERS},
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
    since = repair_since(run)
    while not run.planning_done:
        chunks, cursor, planning_done = _plan_step(
            run.cursor, page_size(run), first_seq=run.chunks_total, since=since
        )
        for chunk in chunks:
            chunk.run = run
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


def repair_since(run: SweepRun) -> tuple[datetime, datetime | None] | None:
    """A walk's repair covers only the rows its walk did not check: not checked between the walk's
    start and end (``walk_started_at``, ``walk_finished_at``); None: every row (keys-batched)."""
    return (run.walk_started_at, run.walk_finished_at) if run.strategy == WALK else None


def _plan_step(
    cursor: str, size: int, *, first_seq: int, since: tuple[datetime, datetime | None] | None = None
) -> tuple[list[SweepChunk], str, bool]:
    """The next ``PLAN_BATCH`` chunks after ``cursor`` (unsaved, without a run), the new cursor,
    and whether planning is done. The one planner of the sweep, of its repair (``since``: only
    rows its walk did not check, ``repair_since``) and of its dry run."""
    keys_qs = unchecked_since(CourseOverview.objects.order_by("id"), since)
    if cursor:
        keys_qs = keys_qs.filter(id__gt=cursor)
    # the stored strings: parsing 100,000 keys only to print them again is pure cost
    keys = list(keys_qs.values_list(Cast("id", output_field=CharField()), flat=True)[: size * PLAN_BATCH])
    chunks = [
        SweepChunk(seq=first_seq + i, first_key=group[0], last_key=group[-1], size=len(group))
        for i, group in enumerate(_one_request_groups(keys, size))
    ]
    return chunks, (keys[-1] if keys else cursor), len(keys) < size * PLAN_BATCH


def _one_request_groups(keys: list[str], size: int) -> Iterator[list[str]]:
    """Groups of at most ``size`` keys, each small enough for one catalog request (one URL under
    ``max_url_length``): a chunk is then one request, never retried all or nothing."""
    api_url = catalog_api_url()
    max_url_length = current_config().max_url_length
    for start in range(0, len(keys), size):
        group = keys[start : start + size]
        if api_url:
            yield from split_keys_for_urls(api_url, group, max_url_length)
        else:  # no catalog configured (the chunks will fail to fetch anyway)
            yield group


def chunk_overviews(
    first_key: str, last_key: str, since: tuple[datetime, datetime | None] | None = None
) -> list[SyncRow]:
    """The chunk's rows now: courses added to the range since planning are included. A repair
    chunk (``since``, ``repair_since``) takes only the rows its walk did not check."""
    rows = CourseOverview.objects.filter(id__gte=first_key, id__lte=last_key).order_by("id")
    return read_rows(unchecked_since(rows, since))


def sync_chunk(
    first_key: str,
    last_key: str,
    client: CatalogSource,
    since: tuple[datetime, datetime | None] | None = None,
) -> SyncCounters:
    """Sync one chunk's courses: one bulk fetch, one guarded bulk write. Raises ``CatalogError``."""
    return sync_overviews(chunk_overviews(first_key, last_key, since), client).counters


@dataclass
class ChunkOutcome:
    """The attempt that ended a chunk: its courses' counters, or the error that failed it, and
    that attempt's own cost (earlier attempts' costs were added by ``record_attempt``)."""

    counters: SyncCounters
    requests: int | None = None  # catalog requests of this attempt; None: counters.catalog_requests
    retries: int = 0
    throttled: int = 0
    error: str = ""
    # A failed chunk: when its failed fetch was first tried (``record_failure``'s ``started_at``).
    started_at: datetime | None = None


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
            heartbeat_at=timezone.now(),
            **{RUN_COUNTER_FIELDS[f]: F(RUN_COUNTER_FIELDS[f]) + n for f, n in cost.items()},
        )


def finish_chunk(run_id: int, chunk_id: int, outcome: ChunkOutcome, *, may_complete: bool = True) -> bool:
    """Record a chunk's result once, add it to the run's counters and complete the run if this
    was the last chunk, in one transaction. False if the chunk was no longer pending (a duplicate
    run, or its run was stopped): its result is dropped, its cost still counted.

    A failed chunk counts all its courses ``errored`` and records the failure on their rows
    (``record_failure``: status ``error``, the error, when it was tried; values kept), so a
    course's "last attempted" covers sweeps too. ``may_complete=False``: the caller stops the run
    next (``stop_run`` says why)."""
    c = outcome.counters
    failed = bool(outcome.error)
    now = timezone.now()
    # this attempt's share of every counter; the cost counters add to earlier attempts' costs
    counts = {name: getattr(c, name) for name in COURSE_COUNTERS}
    counts.update(
        catalog_requests=c.catalog_requests if outcome.requests is None else outcome.requests,
        retries=outcome.retries,
        throttled=outcome.throttled,
    )
    with transaction.atomic():
        chunk = SweepChunk.objects.filter(pk=chunk_id, status=ChunkStatus.PENDING)
        written = chunk.update(
            status=ChunkStatus.FAILED if failed else ChunkStatus.DONE,
            finished_at=now,
            **{name: counts[name] for name in COURSE_COUNTERS if name != "errored"},
            errored=F("size") if failed else counts["errored"],
            **{name: F(name) + counts[name] for name in COST_COUNTERS},
            error=outcome.error[:2000],
        )
        if not written:
            log.info(
                "catalog sweep: chunk %s of sweep #%s was already finished; result dropped", chunk_id, run_id
            )
        else:
            count_sweep_chunk("failed" if failed else "done")  # catalog_sync_sweep_chunks_total
            if failed:  # all its courses, read in this transaction (a failed attempt counted none)
                first_key, last_key, counts["errored"] = SweepChunk.objects.values_list(
                    "first_key", "last_key", "size"
                ).get(pk=chunk_id)
                run = SweepRun.objects.only("strategy", "walk_started_at", "walk_finished_at").get(pk=run_id)
                keys = unchecked_since(
                    CourseOverview.objects.filter(id__gte=first_key, id__lte=last_key), repair_since(run)
                ).values_list(Cast("id", output_field=CharField()), flat=True)
                record_failure(list(keys), outcome.error, started_at=outcome.started_at)
            SweepRun.objects.filter(pk=run_id).update(
                heartbeat_at=now,
                chunks_done=F("chunks_done") + 1,
                chunks_failed=F("chunks_failed") + int(failed),
                **{RUN_COUNTER_FIELDS[n]: F(RUN_COUNTER_FIELDS[n]) + v for n, v in counts.items() if v},
            )
            if may_complete:
                complete_if_done(run_id)
    if not written:
        record_attempt(
            run_id, chunk_id, requests=counts["catalog_requests"], throttled=outcome.throttled, retried=False
        )
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
        "catalog sweep: sweep #%s %s: %s chunks=%s failed_chunks=%s strategy=%s estimate_keys=%s "
        "estimate_walk=%s walk_pages=%s walk_sizes=%s",
        run.pk,
        run.status,
        counters_line(run_counters(run)),
        run.chunks_total,
        run.chunks_failed,
        run.strategy or KEYS,
        run.estimate_keys,
        run.estimate_walk,
        run.walk_pages,
        run.walk_sizes,
    )


def run_counters(run: SweepRun) -> dict[str, int]:
    """The run's counters by their names in ``SWEEP_COUNTERS``."""
    return {name: getattr(run, RUN_COUNTER_FIELDS[name]) for name in SWEEP_COUNTERS}


def counters_line(counters: dict[str, int]) -> str:
    """``seen=.. updated=.. ... throttled=..``: every counter, in ``SWEEP_COUNTERS`` order."""
    return " ".join(f"{name}={counters.get(name, 0)}" for name in SWEEP_COUNTERS)


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
    started_at: datetime


class _Book:
    """Where the in-process sweep keeps its record: the run's rows (``_RunBook``), or nothing but
    memory in a dry run (``_DryBook``). The driver (``_drive``) is the same for both."""

    since: tuple[datetime, datetime | None] | None = None  # a walk's repair: ``repair_since``

    def chunks(self) -> Iterator[SweepChunk]:
        raise NotImplementedError

    def retrying(self, chunk: SweepChunk, attempt: _Attempt, *, spends: bool) -> None:
        """A failed attempt that will be retried: count its cost."""

    def failed(self, chunk: SweepChunk, attempt: _Attempt, error: str, first: _Attempt) -> None:
        """The chunk failed for good (the sweep stops)."""
        raise NotImplementedError

    def done(self, chunk: SweepChunk, rows: list[SyncRow], attempt: _Attempt) -> SyncCounters:
        raise NotImplementedError

    def still_ours(self) -> bool:
        return True

    def unused(self, chunk: SweepChunk, attempt: _Attempt) -> None:
        """A prefetched chunk the sweep stopped before: its requests were sent all the same."""


class _RunBook(_Book):
    def __init__(self, run: SweepRun) -> None:
        self.run = run
        self.since = repair_since(run)

    def chunks(self) -> Iterator[SweepChunk]:
        yield from pending_chunks(self.run)
        yield from (chunk for batch in plan_chunks(self.run) for chunk in batch)

    def retrying(self, chunk, attempt, *, spends):
        record_attempt(
            self.run.pk, chunk.pk, requests=attempt.requests, throttled=attempt.throttled, retried=spends
        )

    def failed(self, chunk, attempt, error, first):
        outcome = ChunkOutcome(
            SyncCounters(),
            attempt.requests,
            throttled=attempt.throttled,
            error=error,
            started_at=first.started_at,
        )
        finish_chunk(self.run.pk, chunk.pk, outcome, may_complete=False)
        stop_run(self.run, error)

    def done(self, chunk, rows, attempt):
        counters = apply_runs(rows, attempt.fetched).counters
        finish_chunk(
            self.run.pk,
            chunk.pk,
            ChunkOutcome(counters, attempt.requests, throttled=attempt.fetched.throttled),
        )
        return counters

    def still_ours(self):
        return heartbeat(self.run.pk, self.run.owner)

    def unused(self, chunk, attempt):
        record_attempt(self.run.pk, chunk.pk, requests=attempt.requests, throttled=attempt.throttled)


@dataclass
class DryRun:
    """What a dry run found: the changes a sweep would write, and the counters it would record."""

    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SWEEP_COUNTERS, 0))
    changes: list[Change] = field(default_factory=list)
    chunks_done: int = 0
    completed: bool = False
    error: str = ""


class _DryBook(_Book):
    """A dry run's record: memory only. No ``SweepRun`` (and so no lease): a preview neither
    blocks nor waits for a real sweep, and leaves no run for the admin or ``/health/`` to count."""

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self.result = DryRun()

    def _add(self, **counts: int) -> None:
        for name, n in counts.items():
            self.result.counters[name] += n

    def chunks(self) -> Iterator[SweepChunk]:
        cursor, seq, planning_done = "", 0, False
        while not planning_done:
            chunks, cursor, planning_done = _plan_step(cursor, self.page_size, first_seq=seq)
            seq += len(chunks)
            yield from chunks

    def retrying(self, chunk, attempt, *, spends):
        self._add(catalog_requests=attempt.requests, throttled=attempt.throttled, retries=int(spends))

    def failed(self, chunk, attempt, error, first):
        self._add(catalog_requests=attempt.requests, throttled=attempt.throttled, errored=chunk.size)
        self.result.chunks_done += 1
        self.result.error = error

    def done(self, chunk, rows, attempt):
        page = apply_runs(rows, attempt.fetched, dry_run=True)
        counters = page.counters
        self._add(
            **{name: getattr(counters, name) for name in COURSE_COUNTERS},
            catalog_requests=attempt.requests,
            throttled=attempt.fetched.throttled,
        )
        self.result.changes.extend(page.changes)
        self.result.chunks_done += 1
        return counters

    def unused(self, chunk, attempt):
        self._add(catalog_requests=attempt.requests, throttled=attempt.throttled)


def run_in_process(
    run: SweepRun,
    client: CatalogSource,
    *,
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    on_chunk: Callable[[SweepChunk, SyncCounters], None] | None = None,
) -> SweepRun:
    """The same sweep, run in this process chunk by chunk (``sync_catalog`` without --async).

    A chunk whose fetch failed is retried here by the one retry rule (``next_retry`` with
    ``policy``); one that keeps failing stops the sweep (what earlier chunks wrote stays).
    Whatever ends this function early (a failed chunk, an exception, KeyboardInterrupt) leaves
    the run stopped, never running; a run taken over by another trigger while this process
    waited is left to it (returned still running).
    """
    try:
        if run.strategy == WALK and not run.walk_done:
            walked = walk(
                run,
                client,
                policy=policy,
                sleep=sleep,
                on_page=(lambda counters: on_chunk(None, counters)) if on_chunk else None,
            )
            if not walked.done:  # no time budget and no longest wait here: cannot happen
                raise RuntimeError("the in-process walk paused")
            run.refresh_from_db()
        book = _RunBook(run)
        if _drive(book, client, policy=policy, sleep=sleep, on_chunk=on_chunk):
            complete_if_done(run.pk)
            run.refresh_from_db()
            if run.status == SweepStatus.RUNNING:  # cannot happen unless chunks were added behind us
                stop_run(run, "the in-process sweep ended with chunks still pending")
    except SweepTakenOver as exc:
        log.warning("catalog sweep: %s; this process stops", exc)
    except BaseException as exc:  # an error or KeyboardInterrupt: free the lease before re-raising
        stop_run(run, f"interrupted: {type(exc).__name__}: {exc}")
        raise
    run.refresh_from_db()
    return run


def dry_run(
    client: CatalogSource,
    *,
    page_size: int,
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    on_chunk: Callable[[SweepChunk, SyncCounters], None] | None = None,
) -> DryRun:
    """The in-process sweep as a preview (``sync_catalog --dry-run``): the same chunks, fetches
    and retries, every change collected and nothing written (no overview, no sweep record). A
    chunk that keeps failing stops it (``completed`` False, ``error`` says why)."""
    book = _DryBook(page_size)
    book.result.completed = _drive(book, client, policy=policy, sleep=sleep, on_chunk=on_chunk)
    return book.result


def _drive(
    book: _Book,
    client: CatalogSource,
    *,
    policy: RetryPolicy,
    sleep: Callable[[float], None],
    on_chunk: Callable[[SweepChunk, SyncCounters], None] | None,
) -> bool:
    """Run every chunk of ``book`` in this process; True when all were done, False when one
    failed for good (``book.failed`` was told).

    Pipelined: while this thread reads, compares and writes chunk k, a second thread already
    fetches chunk k+1 from the catalog, so the catalog's latency overlaps our own work. Fetches
    hold a lock, so each one's cost (the client's ``requests_made`` before and after) is exactly
    its own. Raises ``SweepTakenOver`` when the book's run is no longer ours after a wait; on any
    exception, the prefetched chunk's cost is still counted.
    """
    fetch_lock = threading.Lock()

    def fetch(rows: list[SyncRow]) -> _Attempt:
        with fetch_lock:
            requests, throttled = client.requests_made, getattr(client, "throttled_responses", 0)
            started_at = timezone.now()
            try:
                fetched, error = fetch_runs(rows, client), None
            except CatalogError as exc:
                fetched, error = None, exc
            return _Attempt(
                fetched,
                error,
                client.requests_made - requests,
                getattr(client, "throttled_responses", 0) - throttled,
                started_at,
            )

    def complete(chunk: SweepChunk, rows: list[SyncRow], fetching: Future[_Attempt]) -> bool:
        first = attempt = fetching.result()
        retries = tries = 0
        while attempt.error is not None:
            exc = attempt.error
            tries += 1
            plan = next_retry(exc, retries, policy)
            if plan is None:
                error = (
                    f"chunk {chunk.seq} ({chunk.first_key}..) failed after {tries} attempt(s): "
                    f"{type(exc).__name__}: {exc}"
                )
                book.failed(chunk, attempt, error, first)
                return False
            book.retrying(chunk, attempt, spends=plan.spends)
            retries = plan.retries
            log.warning("catalog sweep: chunk %s: %s; retrying in %.1fs", chunk.seq, exc, plan.delay)
            sleep(plan.delay)
            if not book.still_ours():  # a long wait: another trigger may own it now
                raise SweepTakenOver(f"sweep #{chunk.run_id} was taken over while chunk {chunk.seq} waited")
            attempt = fetch(rows)
        counters = book.done(chunk, rows, attempt)
        if on_chunk:
            on_chunk(chunk, counters)
        return True

    def count_unused(prefetched: tuple[SweepChunk, list[SyncRow], Future[_Attempt]] | None) -> None:
        if prefetched is None:
            return
        chunk, _, future = prefetched
        try:
            attempt = future.result()
        except BaseException:
            return
        book.unused(chunk, attempt)

    fetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog-fetch")
    in_flight: tuple[SweepChunk, list[SyncRow], Future[_Attempt]] | None = None
    following: tuple[SweepChunk, list[SyncRow], Future[_Attempt]] | None = None
    try:
        for chunk in book.chunks():
            rows = chunk_overviews(chunk.first_key, chunk.last_key, book.since)
            following = (chunk, rows, fetcher.submit(fetch, rows))
            if in_flight is not None and not complete(*in_flight):
                count_unused(following)
                return False
            in_flight, following = following, None
        return in_flight is None or complete(*in_flight)
    except SweepTakenOver:
        raise
    except BaseException:
        count_unused(following)
        raise
    finally:
        fetcher.submit(connections.close_all)  # the fetch thread's own connections (rate table)
        fetcher.shutdown(wait=True)
