"""The full resync as durable, resumable work: a ``SweepRun`` split into ``SweepChunk`` ranges.

- **Single flight**: a lease in the shared cache (``cache.add``, a TTL, renewed by heartbeats).
  Whoever holds it runs the sweep; a second trigger finds it held and does nothing. A dead sweep
  stops heartbeating, its lease expires, and the next trigger *resumes* it.
- **Checkpoint**: chunks are planned in keyset order over our own overview table and written as
  rows, ``PLAN_BATCH`` at a time, with ``SweepRun.cursor`` = the last key planned. Resuming
  re-dispatches the chunks still pending and plans on from the cursor: nothing starts over.
- **Chunks**: a chunk is a key range ``[first_key, last_key]`` of about ``page_size`` courses,
  synced by one call of ``sync_overviews`` (one catalog request, ~3 SQL queries). Finishing a
  chunk is an UPDATE guarded by ``status=pending``, so a chunk run twice (redelivered after a
  crash, and re-dispatched on resume) counts once.
- **Completion**: counters are summed from the chunks into the ``SweepRun`` row every
  ``PROGRESS_EVERY`` chunks and at the end; the run completes when planning is done and no chunk
  is pending.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import CharField, Count, F, Q, Sum
from django.db.models.functions import Cast
from django.utils import timezone

from catalog.client import split_keys_for_urls
from catalog.errors import CatalogError
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
from overviews.models import CourseOverview

log = logging.getLogger("catalog.sweep")

LEASE_KEY = "catalog_sync:sweep:lease"
# Seconds without a heartbeat after which a sweep counts as dead and the next trigger resumes it.
LEASE_TTL = getattr(settings, "CATALOG_SWEEP_LEASE_TTL", 600)
PLAN_BATCH = 20  # chunks planned per query
PROGRESS_EVERY = 10  # chunks between counter roll-ups into the SweepRun row
_DONE_HINT = "catalog_sync:sweep:{}:done"

# SweepRun counter field <- SweepChunk field
_ROLLUP = {
    "courses_seen": "seen",
    "courses_updated": "updated",
    "courses_unchanged": "unchanged",
    "courses_missing": "missing",
    "courses_refused": "refused",
    "courses_errored": "errored",
    "courses_superseded": "superseded",
    "catalog_requests": "catalog_requests",
    "retries": "retries",
    "throttled": "throttled",
}


def _lease_value(run_id: int) -> str:
    return f"run:{run_id}"


def lease_holder() -> str | None:
    return cache.get(LEASE_KEY)


def start_sweep(trigger: str, *, page_size: int | None = None, in_process: bool = False) -> SweepRun | None:
    """Take the lease and return the run to work on (a dead one resumed, or a new one); None
    when another sweep holds the lease."""
    if not cache.add(LEASE_KEY, f"starting:{uuid.uuid4().hex}", timeout=LEASE_TTL):
        log.info("catalog sweep: not started (%s): a sweep is running (%s)", trigger, lease_holder())
        return None
    run = SweepRun.objects.filter(status=SweepStatus.RUNNING).order_by("started_at").first()
    if run is not None and refresh_run(run).status != SweepStatus.RUNNING:
        run = None  # it had in fact finished (its last roll-up was lost): start afresh
    if run is not None:
        run.resumed += 1
        run.heartbeat_at = timezone.now()
        run.save(update_fields=["resumed", "heartbeat_at"])
        log.warning(
            "catalog sweep: resuming sweep #%s from %r (%s chunks planned, %s done)",
            run.pk,
            run.cursor,
            run.chunks_total,
            run.chunks_done,
        )
    else:
        run = SweepRun.objects.create(
            trigger=trigger, page_size_override=page_size, in_process=in_process, heartbeat_at=timezone.now()
        )
        log.info("catalog sweep: sweep #%s started (%s)", run.pk, trigger)
    cache.set(LEASE_KEY, _lease_value(run.pk), timeout=LEASE_TTL)
    return run


def heartbeat(run_id: int) -> bool:
    """Renew the lease if this run still holds it. False: it does not (expired, or taken over)."""
    if cache.get(LEASE_KEY) != _lease_value(run_id):
        return False
    cache.touch(LEASE_KEY, LEASE_TTL)
    return True


def release_lease(run_id: int) -> None:
    if cache.get(LEASE_KEY) == _lease_value(run_id):
        cache.delete(LEASE_KEY)


def page_size_for(run: SweepRun) -> int:
    """The run's override, else the admin's current page size (read anew for every batch)."""
    return run.page_size_override or current_config().page_size


def pending_chunks(run: SweepRun) -> list[SweepChunk]:
    return list(run.chunks.filter(status=ChunkStatus.PENDING).order_by("seq"))


def plan_chunks(
    run: SweepRun, *, page_size: Callable[[SweepRun], int] = page_size_for
) -> Iterator[list[SweepChunk]]:
    """Plan the rest of the run, ``PLAN_BATCH`` chunks a step, checkpointing the cursor."""
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
        with transaction.atomic():
            chunks = SweepChunk.objects.bulk_create(chunks)
            if keys:
                run.cursor = keys[-1]
            run.chunks_total += len(chunks)
            run.planning_done = len(keys) < size * PLAN_BATCH
            run.heartbeat_at = timezone.now()
            run.save(update_fields=["cursor", "chunks_total", "planning_done", "heartbeat_at"])
        heartbeat(run.pk)
        if chunks:
            yield chunks


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
    counters: SyncCounters
    retries: int = 0
    throttled: int = 0
    error: str = ""


def finish_chunk(run_id: int, chunk_id: int, outcome: ChunkOutcome) -> bool:
    """Record a chunk's result once. False if it was already finished (a duplicate run)."""
    c = outcome.counters
    status = ChunkStatus.FAILED if outcome.error else ChunkStatus.DONE
    written = SweepChunk.objects.filter(
        pk=chunk_id, status=ChunkStatus.PENDING
    ).update(
        status=status,
        finished_at=timezone.now(),
        seen=c.seen,
        updated=c.updated,
        unchanged=c.unchanged,
        missing=c.missing,
        refused=c.refused,
        errored=F("size") if outcome.error else c.errored,  # a failed chunk: all its courses
        superseded=c.superseded,
        catalog_requests=c.catalog_requests,
        retries=outcome.retries,
        throttled=outcome.throttled,
        error=outcome.error[:2000],
    )
    if not written:
        log.info(
            "catalog sweep: chunk %s of sweep #%s was already finished; result dropped", chunk_id, run_id
        )
        return False
    heartbeat(run_id)
    hint = _DONE_HINT.format(run_id)
    cache.add(hint, 0, timeout=LEASE_TTL * 6)
    try:
        done = cache.incr(hint)
    except ValueError:
        done = PROGRESS_EVERY
    total = cache.get(_DONE_HINT.format(run_id) + ":total")
    if done % PROGRESS_EVERY == 0 or (total is not None and done >= total):
        refresh_run(SweepRun.objects.get(pk=run_id))
    return True


def mark_planning_done(run: SweepRun) -> None:
    """Tell chunk finishers how many chunks there are, so the last one completes the run."""
    cache.set(_DONE_HINT.format(run.pk) + ":total", run.chunks_total, timeout=LEASE_TTL * 6)


def refresh_run(run: SweepRun) -> SweepRun:
    """Roll the chunks' counters up into the run; complete it when nothing is left to do."""
    sums = run.chunks.aggregate(
        **{field: Sum(chunk_field, default=0) for field, chunk_field in _ROLLUP.items()},
        done=Count("pk", filter=~Q(status=ChunkStatus.PENDING)),
        failed=Count("pk", filter=Q(status=ChunkStatus.FAILED)),
        pending=Count("pk", filter=Q(status=ChunkStatus.PENDING)),
    )
    pending = sums.pop("pending")
    run.chunks_done = sums.pop("done")
    run.chunks_failed = sums.pop("failed")
    for field, value in sums.items():
        setattr(run, field, value)
    fields = [*_ROLLUP, "chunks_done", "chunks_failed"]
    finished = run.status == SweepStatus.RUNNING and run.planning_done and pending == 0
    if finished:
        if not run.chunks_failed:
            run.status = SweepStatus.COMPLETE
        elif run.chunks_failed == run.chunks_total:
            run.status = SweepStatus.FAILED
        else:
            run.status = SweepStatus.PARTIAL
        run.finished_at = timezone.now()
        fields += ["status", "finished_at"]
    # Only a running run is updated: two finishers racing cannot finish it twice.
    SweepRun.objects.filter(pk=run.pk, status=SweepStatus.RUNNING).update(
        **{f: getattr(run, f) for f in fields}
    )
    if finished:
        release_lease(run.pk)
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
    return run


def fail_run(run: SweepRun, error: str) -> None:
    """An in-process sweep that cannot go on: stop it, keep what was written, free the lease."""
    refresh_run(run)
    SweepRun.objects.filter(pk=run.pk, status=SweepStatus.RUNNING).update(
        status=SweepStatus.FAILED, finished_at=timezone.now(), error=error[:2000]
    )
    run.refresh_from_db()
    release_lease(run.pk)


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
    fetches chunk k+1 from the catalog (the fetch touches no database), so the catalog's latency
    overlaps our own work. A chunk whose fetch failed is retried here, synchronously; one that
    keeps failing stops the sweep (what earlier chunks wrote stays).
    """

    def chunks() -> Iterator[SweepChunk]:
        yield from pending_chunks(run)
        for batch in plan_chunks(run):
            yield from batch

    def complete(chunk: SweepChunk, rows: list[SyncRow], fetching: Future[Fetched]) -> bool:
        retries = 0
        while True:
            try:
                fetched = fetching.result() if retries == 0 else fetch_runs(rows, client)
                break
            except CatalogError as exc:
                if not exc.retryable or retries + 1 >= attempts:
                    error = (
                        f"chunk {chunk.seq} ({chunk.first_key}..) failed after {retries + 1} attempt(s): "
                        f"{type(exc).__name__}: {exc}"
                    )
                    log.error("catalog sweep: sweep #%s stopped: %s", run.pk, error)
                    fail_run(run, error)
                    return False
                delay = backoff(retries, exc)
                retries += 1
                log.warning("catalog sweep: chunk %s: %s; retrying in %.1fs", chunk.seq, exc, delay)
                sleep(delay)
        counters = apply_runs(rows, fetched).counters
        outcome = ChunkOutcome(counters, retries=retries, throttled=fetched.throttled)
        finish_chunk(run.pk, chunk.pk, outcome)
        if on_chunk:
            on_chunk(chunk, counters)
        return True

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog-fetch") as fetcher:
        in_flight: tuple[SweepChunk, list[SyncRow], Future[Fetched]] | None = None
        for chunk in chunks():
            rows = chunk_overviews(chunk.first_key, chunk.last_key)
            following = (chunk, rows, fetcher.submit(fetch_runs, rows, client))
            if in_flight is not None and not complete(*in_flight):
                return run
            in_flight = following
        if in_flight is not None and not complete(*in_flight):
            return run
    mark_planning_done(run)
    return refresh_run(run)
