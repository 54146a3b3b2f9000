"""The sweep's two strategies, the choice between them, and the walk with its adaptive page size.

- **keys-batched**: pages of our own keys, asked for with ``keys=`` (``catalog.sweep``'s chunks).
  Its cost is set by the URL: about 70 real, encoded keys fit a 4 KB request line, so 100,000
  courses cost about 1,450 requests, whatever the page size.
- **walk + repair**: walk the catalog's whole list in large pages (``page`` always sent, the
  page size chosen per page), write every run the LMS has (and, from a master's run, the LMS's
  CCX courses of that master), then fetch with ``keys=`` every LMS course the walk did not check --
  skipped because the list shifted under the walk (runs deleted before the walk's position), a
  key whose case differs, or a course the catalog does not have. The repair is keys-batched chunks
  over those courses only. A run the walk sees twice (runs inserted before its position) is harmless: the
  second time, its course is already checked in this sweep and is not read again.

  What the walk has checked is kept where everything else is: the overview rows. Every row the
  walk writes gets ``catalog_checked_at`` (one guarded UPDATE per page, as always); the repair
  takes the rows not checked since ``SweepRun.walk_started_at``. So a worker that dies mid-walk
  loses nothing: the walk resumes from its checkpoint (``walk_offset``), and whatever it had
  checked stays checked.

- **The choice** (``choose_strategy``), per sweep, from cheap facts: the catalog's ``count`` (one
  request for a page of one; skipped when keys-batched needs at most two requests, since the
  walk cannot then be cheaper), and one aggregate query over our own table (courses, CCX courses,
  courses the catalog lacked last time, the keys' encoded length). Each strategy's request
  estimate is recorded on the run with the choice; the cheaper runs, keys-batched on a tie.

- **The page size, found at run time** (``PageSizer``): the walk starts at the configured page
  size and doubles it while a page answers within half the time budget (a page's cost is
  about linear in its size, so the doubled page should still fit the budget), up to the ceiling;
  it halves it when a page takes longer than the budget, times out or fails with a 5xx. Page
  numbers must line up with the list positions already walked (``page`` n of size s starts at
  (n - 1) * s), so each size is a divisor of the position it starts at.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connections, transaction
from django.db.models import CharField, Count, F, Q, Sum, Value
from django.db.models.functions import Cast, Length, Replace
from django.utils import timezone
from opaque_keys import InvalidKeyError

from catalog.connection import catalog_api_url
from catalog.mapping import RefusedRecord, map_course_run
from catalog.models import (
    COURSE_COUNTERS,
    RUN_COUNTER_FIELDS,
    CatalogIntegration,
    SweepRun,
    SweepStatus,
    current_config,
)
from catalog.retry import RetryPolicy, next_retry
from catalog.sync import CCX_PREFIX, SyncCounters, catalog_key_for, write_listed_runs
from catalog_client.client import ListPage, bulk_url_overhead
from catalog_client.errors import CatalogError, CatalogServerError, CatalogTimeout
from overviews.models import CatalogStatus, CourseOverview

log = logging.getLogger("catalog.walk")

AUTO = "auto"
KEYS = "keys"
WALK = "walk"
# Characters of a course key that ``quote(key, safe="")`` writes as three (``%3A`` ...).
_ENCODED_CHARS = (":", "+", "/", "@", " ", "%", "#", "?", "&", "=")


class SweepTakenOver(Exception):
    """This process's run was taken over by another trigger (its heartbeat had gone stale)."""


# ------------------------------------------------------------------------------------------------
# The adaptive page size


class PageSizer:
    """The walk's page size: doubled while pages are fast, halved when one is slow or fails.

    ``plan(offset)`` gives the ``(page, page_size)`` to ask for next: ``page_size`` is the wanted
    size, or the largest divisor of ``offset`` not above it (page ``n`` of size ``s`` starts at
    ``(n - 1) * s``; a size that does not divide the position would skip or repeat runs).
    ``sizes`` keeps the sizes used, as ``[size, pages]`` runs in order.
    """

    def __init__(self, start: int, ceiling: int, budget: float, *, sizes: list | None = None) -> None:
        self.ceiling = max(1, int(ceiling))
        self.want = max(1, min(int(start), self.ceiling))
        self.budget = float(budget)
        self.sizes: list[list[int]] = [list(pair) for pair in (sizes or [])]
        self.size = self.want
        self.cap: int | None = None  # the catalog's own maximum page size, once seen

    def plan(self, offset: int) -> tuple[int, int]:
        self.size = aligned_size(offset, self.want)
        return offset // self.size + 1, self.size

    def answered(self, seconds: float, *, full: bool) -> None:
        """A page of ``self.size`` answered in ``seconds``; ``full``: it held that many runs (a
        short last page says nothing about a larger one)."""
        if self.sizes and self.sizes[-1][0] == self.size:
            self.sizes[-1][1] += 1
        else:
            self.sizes.append([self.size, 1])
        if seconds > self.budget:
            self.want = max(1, self.size // 2)
        elif full and seconds <= self.budget / 2:
            self.want = self.size * 2
        else:
            self.want = self.size
        self.want = min(self.want, self.ceiling)

    def failed(self) -> None:
        """A timeout or a 5xx: the page was too much for the catalog (or it is unwell); halve."""
        self.want = max(1, self.size // 2)

    def capped(self, served: int) -> None:
        """The catalog served fewer runs than asked with a next page: it caps its page size (kept
        on the run, ``walk_page_cap``, so the walk's next message knows it too)."""
        self.cap = self.ceiling = max(1, served)
        self.want = min(self.want, self.ceiling)


def aligned_size(offset: int, want: int) -> int:
    """The largest page size ``<= want`` that divides ``offset`` (any size at the start), looking
    down to half of ``want`` before settling for the greatest common divisor."""
    want = max(1, want)
    if offset <= 0 or offset % want == 0:
        return want
    for size in range(want - 1, max(1, want // 2) - 1, -1):
        if offset % size == 0:
            return size
    return math.gcd(offset, want)


def walk_pages_needed(count: int, start: int, ceiling: int) -> int:
    """Pages a walk of ``count`` runs asks for if every page is fast (the sizer's best case)."""
    sizer = PageSizer(start, ceiling, budget=1.0)
    offset = pages = 0
    while offset < count and pages < 1_000_000:
        _, size = sizer.plan(offset)
        offset += size
        pages += 1
        sizer.answered(0.0, full=offset < count)
    return max(1, pages)


# ------------------------------------------------------------------------------------------------
# Cheap facts and estimates


@dataclass
class LmsFacts:
    courses: int = 0
    ccx: int = 0
    missing: int = 0  # rows the catalog did not have at their last check
    encoded_length: int = 0  # the keys' total length once URL-encoded

    @property
    def mean_encoded_length(self) -> float:
        return self.encoded_length / self.courses if self.courses else 0.0


def lms_facts() -> LmsFacts:
    """One aggregate query over the overview table."""
    key = Cast("id", output_field=CharField())
    plain = key
    for char in _ENCODED_CHARS:
        plain = Replace(plain, Value(char), Value(""))
    sums = CourseOverview.objects.aggregate(
        courses=Count("pk"),
        ccx=Count("pk", filter=Q(id__startswith=CCX_PREFIX)),
        missing=Count("pk", filter=Q(catalog_status=CatalogStatus.MISSING)),
        length=Sum(Length(key), default=0),
        special=Sum(Length(key) - Length(plain), default=0),
    )
    return LmsFacts(
        courses=sums["courses"],
        ccx=sums["ccx"],
        missing=sums["missing"],
        encoded_length=int(sums["length"] or 0) + 2 * int(sums["special"] or 0),
    )


def keys_per_url(mean_encoded_length: float, *, page_size: int, max_url_length: int, api_url: str) -> int:
    """How many keys of this mean encoded length one ``keys=`` request holds (the split rule of
    ``split_keys_for_urls``: every key plus its comma under ``max_url_length``)."""
    room = max_url_length - bulk_url_overhead(api_url, page_size) - 1
    per_key = max(1.0, mean_encoded_length) + 1  # the comma
    return max(1, min(page_size, int((room + 1) // per_key)))


def estimate_keys_requests(courses: int, per_url: int, page_size: int) -> int:
    """Requests of a keys-batched pass over ``courses``: groups of ``page_size``, each split into
    requests of at most ``per_url`` keys."""
    if courses <= 0:
        return 0
    groups, rest = divmod(courses, page_size)
    per_group = math.ceil(page_size / per_url)
    return groups * per_group + (math.ceil(rest / per_url) if rest else 0)


@dataclass
class Choice:
    strategy: str
    reason: str
    catalog_count: int | None = None
    estimate_keys: int | None = None
    estimate_walk: int | None = None
    probe_requests: int = 0


def choose_strategy(
    client, *, facts: LmsFacts, page_size: int, config: CatalogIntegration, forced: str | None = None
) -> Choice:
    """Which strategy this sweep runs, and why. One catalog request (the count probe) unless
    keys-batched needs at most two. A failed probe means keys-batched (it says so)."""
    per_url = keys_per_url(
        facts.mean_encoded_length,
        page_size=page_size,
        max_url_length=config.max_url_length,
        api_url=catalog_api_url(),
    )
    keys_cost = estimate_keys_requests(facts.courses, per_url, page_size)
    if forced == KEYS or (forced is None and keys_cost <= 2):
        reason = "requested" if forced else f"keys-batched needs {keys_cost} request(s): no probe"
        return Choice(KEYS, reason, estimate_keys=keys_cost)
    before = client.requests_made
    try:
        count = client.count_runs()
    except CatalogError as exc:
        spent = client.requests_made - before
        if forced == WALK:
            return Choice(WALK, f"requested (count probe failed: {exc})", probe_requests=spent)
        return Choice(
            KEYS,
            f"count probe failed ({type(exc).__name__}: {exc}); keys-batched",
            estimate_keys=keys_cost,
            probe_requests=spent,
        )
    spent = client.requests_made - before
    walk_cost = estimate_walk_requests(count, facts, page_size, config.walk_page_size_ceiling, per_url)
    if forced:
        strategy, reason = forced, "requested"
    elif walk_cost < keys_cost:
        strategy, reason = WALK, f"walk {walk_cost} < keys {keys_cost} requests"
    else:
        strategy, reason = KEYS, f"keys {keys_cost} <= walk {walk_cost} requests"
    return Choice(strategy, reason, count, keys_cost, walk_cost, spent)


def estimate_walk_requests(count: int, facts: LmsFacts, page_size: int, ceiling: int, per_url: int) -> int:
    """The walk's pages at its best-case growth, plus the repair of the courses it cannot see:
    those beyond the catalog's count and the ones missing last time (at least one request: drift
    between pages can always leave a few). CCX courses are written with their master's run."""
    pages = walk_pages_needed(count, page_size, ceiling)
    unseen = max(facts.courses - facts.ccx - count, facts.missing)
    return pages + max(1, estimate_keys_requests(unseen, per_url, page_size))


# ------------------------------------------------------------------------------------------------
# The walk


def unchecked_since(queryset, since: datetime | tuple[datetime, datetime | None] | None):
    """The rows of ``queryset`` not checked since ``since`` (all of them when None); with a
    ``(start, end)`` window (a walk's, for its repair), the rows not checked within it: a row a
    per-course fetch checked after the walk ended is read again (and counted) like any other."""
    if since is None:
        return queryset
    start, end = since if isinstance(since, tuple) else (since, None)
    outside = Q(catalog_checked_at__isnull=True) | Q(catalog_checked_at__lt=start)
    if end is not None:
        outside |= Q(catalog_checked_at__gt=end)
    return queryset.filter(outside)


@dataclass
class _Fetch:
    """One walk page as fetched: what was asked, the answer (or the error that ended it), the cost."""

    offset: int
    page: int
    size: int
    listed: ListPage | None = None
    error: CatalogError | None = None
    seconds: float = 0.0
    requests: int = 0
    throttled: int = 0
    retries: int = 0
    sent_at: datetime | None = None
    received_at: datetime | None = None
    mapped: dict[str, dict | RefusedRecord] = field(default_factory=dict)  # key -> values or refusal


@dataclass
class WalkResult:
    """How a call of ``walk`` ended: the walk is done, or paused (a long wait, or the time budget
    of this call spent)."""

    done: bool
    pages: int = 0
    pause: float = 0.0  # seconds to wait before going on (a throttle), when not done
    retries: int = 0  # retries already spent on the page the walk paused at (carried over)


def walk_config(run: SweepRun) -> PageSizer:
    """The run's sizer, from its checkpoint and the tunables read now (a change in the admin
    reaches a walk at its next resumption or task)."""
    config = current_config()
    start = run.walk_page_size or run.page_size_override or config.page_size
    ceiling = min(config.walk_page_size_ceiling, run.walk_page_cap or config.walk_page_size_ceiling)
    sizer = PageSizer(start, ceiling, config.walk_page_budget, sizes=run.walk_sizes)
    sizer.cap = run.walk_page_cap
    return sizer


def begin_walk(run: SweepRun) -> None:
    """Stamp the walk's start (once): rows checked after it are the walk's."""
    if run.walk_started_at is None:
        now = timezone.now()
        SweepRun.objects.filter(pk=run.pk, walk_started_at__isnull=True).update(walk_started_at=now)
        run.refresh_from_db(fields=["walk_started_at"])


def walk(
    run: SweepRun,
    client,
    *,
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    longest_wait: float | None = None,
    time_budget: float | None = None,
    on_page: Callable[[SyncCounters], None] | None = None,
    retries: int = 0,
) -> WalkResult:
    """Walk the catalog's list from the run's checkpoint, writing each page, until the end.

    Pipelined: while this thread writes page k, a second thread fetches page k + 1 (its size set
    by page k's time). Retries follow the one retry rule; a timeout or 5xx also halves the page.
    A retry wait longer than ``longest_wait`` (a task would rather re-enqueue itself than sleep)
    pauses the walk (``WalkResult.pause``); so does ``time_budget`` seconds of walking. A page
    that keeps failing ends the walk early (``walk_error``): the repair then fetches, by key,
    everything it did not check. Raises ``SweepTakenOver`` when the run is no longer this owner's.
    ``retries``: the retries already spent on the first page (a walk that paused on it and goes
    on in a new message keeps its count, ``WalkResult.retries``, so a page that keeps failing
    still ends the walk).
    """
    begin_walk(run)
    sizer = walk_config(run)
    ccx = ccx_by_master()
    result = WalkResult(done=False)
    started = time.monotonic()
    lock = threading.Lock()

    def fetch(offset: int, retries: int = 0) -> _Fetch:
        with lock:
            total = _Fetch(offset, 0, 0)
            while True:
                page, size = sizer.plan(offset)
                total.page, total.size = page, size
                before = client.requests_made, getattr(client, "throttled_responses", 0)
                total.sent_at = timezone.now()
                clock = time.monotonic()
                try:
                    total.listed = client.list_page(page, size)
                    total.error = None
                except CatalogError as exc:
                    total.error = exc
                total.seconds = time.monotonic() - clock
                total.received_at = timezone.now()
                total.requests += client.requests_made - before[0]
                total.throttled += getattr(client, "throttled_responses", 0) - before[1]
                if total.error is None:
                    total.mapped = _map_page(total.listed.results)  # here: off the writing thread
                    return total
                if isinstance(total.error, CatalogServerError | CatalogTimeout):
                    sizer.failed()
                plan = next_retry(total.error, retries, policy)
                if plan is None:
                    return total
                if longest_wait is not None and plan.delay > longest_wait:
                    total.retries += int(plan.spends)  # the next message's attempt is that retry
                    raise _Pause(total, plan.delay, plan.retries)
                retries = plan.retries
                total.retries += int(plan.spends)
                log.warning(
                    "catalog sweep: walk page %s (size %s): %s; retrying in %.1fs",
                    page,
                    size,
                    total.error,
                    plan.delay,
                )
                sleep(plan.delay)

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog-walk")
    future = None
    try:
        offset = run.walk_offset
        future = pool.submit(fetch, offset, retries)
        while True:
            try:
                got = future.result()
                future = None
            except _Pause as pause:
                future = None
                _record(run, sizer, offset, offset, pause.fetched, None, done=False)
                result.pause, result.retries = pause.delay, pause.retries
                return result
            if got.error is not None:  # gave up: the repair covers what the walk did not check
                error = f"walk stopped at position {offset}: {type(got.error).__name__}: {got.error}"
                log.error("catalog sweep: sweep #%s: %s; the repair fetches the rest by key", run.pk, error)
                _record(run, sizer, offset, offset, got, None, done=True, error=error)
                result.done = True
                return result
            listed = got.listed
            assert listed is not None
            served = listed.answered
            done = listed.past_end or not listed.has_next or served == 0
            next_offset = offset + served
            if listed.has_next and 0 < served < got.size:  # the catalog caps its pages at ``served``
                sizer.capped(served)
                if offset:  # where this short page started is unknown: go again from here, smaller
                    next_offset = offset
            sizer.answered(got.seconds, full=served >= got.size)
            over_time = time_budget is not None and time.monotonic() - started > time_budget
            if not done and not over_time:
                future = pool.submit(fetch, next_offset)
            counters = _record(run, sizer, offset, next_offset, got, ccx, done=done)
            result.pages += 1
            if on_page:
                on_page(counters)
            offset = next_offset
            if done:
                result.done = True
                return result
            if over_time:
                return result
    except BaseException:
        if future is not None:  # the next page, fetched ahead: its requests were sent all the same
            _add_cost(run, _cost_of(future))
        raise
    finally:
        pool.submit(connections.close_all)
        pool.shutdown(wait=True)


def _cost_of(future) -> _Fetch | None:
    try:
        return future.result()
    except _Pause as pause:
        return pause.fetched
    except BaseException:
        return None


def _add_cost(run: SweepRun, got: _Fetch | None) -> None:
    """Add requests that were sent but belong to no recorded page to the run (whoever owns it)."""
    if got is not None and (got.requests or got.throttled or got.retries):
        SweepRun.objects.filter(pk=run.pk).update(
            catalog_requests=F("catalog_requests") + got.requests,
            throttled=F("throttled") + got.throttled,
            retries=F("retries") + got.retries,
        )


class _Pause(Exception):
    def __init__(self, fetched: _Fetch, delay: float, retries: int) -> None:
        super().__init__(f"pause {delay:.1f}s")
        self.fetched = fetched
        self.delay = delay
        self.retries = retries  # spent on this page, the pending one included


def _map_page(results: list[dict]) -> dict[str, dict | RefusedRecord]:
    """Each listed run's overview values, or its refusal (logged), by its key."""
    mapped: dict[str, dict | RefusedRecord] = {}
    for item in results:
        try:
            mapped[item["key"]] = map_course_run(item)
        except RefusedRecord as exc:
            mapped[item["key"]] = exc
            log.warning("catalog sync: refused catalog record %s: %s", item["key"], exc)
    return mapped


def ccx_by_master() -> dict[str, list[str]]:
    """Our CCX courses by the catalog key of their master (one query): a walk page that lists a
    master writes its CCX courses too."""
    found: dict[str, list[str]] = {}
    keys = CourseOverview.objects.filter(id__startswith=CCX_PREFIX).values_list(
        Cast("id", output_field=CharField()), flat=True
    )
    for key in keys:
        try:
            found.setdefault(catalog_key_for(key), []).append(key)
        except InvalidKeyError:  # not a CCX key after all: the repair fetches it as itself
            continue
    return found


def _apply_page(run: SweepRun, got: _Fetch, ccx: dict[str, list[str]] | None = None) -> SyncCounters:
    """Write one walk page in one statement (``write_listed_runs``: compared in the database, no
    SELECT): the rows it names, and the CCX courses of the masters it lists, that this walk has not
    checked yet. A refused record is not a check: its row is fetched again by the repair and
    counted there."""
    assert got.listed is not None and got.sent_at is not None and got.received_at is not None
    mapped = got.mapped
    targets: list[tuple[str, dict | RefusedRecord]] = list(mapped.items())
    for key, values in mapped.items() if ccx else ():
        targets.extend((course, values) for course in ccx.get(key, ()))
    write = write_listed_runs(
        targets, sent_at=got.sent_at, received_at=got.received_at, not_checked_since=run.walk_started_at
    )
    return SyncCounters(
        seen=write.checked,
        updated=write.changed,
        unchanged=write.checked - write.changed,
        catalog_requests=got.requests,
    )


def _record(
    run: SweepRun,
    sizer: PageSizer,
    offset: int,
    next_offset: int,
    got: _Fetch,
    ccx: dict[str, list[str]] | None,
    *,
    done: bool,
    error: str = "",
) -> SyncCounters:
    """Write a fetched page (``ccx`` not None: it has runs to write), then move the checkpoint: two
    statements, no transaction. The page's write is idempotent (it touches only rows not checked
    since the walk began), so a page written and not checkpointed (a crash between the two, or a
    walker that is not the run's: a duplicate message, a run taken over, whose checkpoint then
    fails) leaves rows checked but not counted; the walk's last checkpoint counts every such row
    (``_count_checked_by_others``), so each course is counted once all the same. A walker whose
    checkpoint fails sent its requests all the same: they are added to the run before
    ``SweepTakenOver`` goes up."""
    counters = _apply_page(run, got, ccx) if got.listed is not None and ccx is not None else SyncCounters()
    try:
        if done:  # the last checkpoint and its count stand or fall together
            with transaction.atomic():
                _checkpoint(run, sizer, offset, next_offset, got, counters, done=done, error=error)
                _count_checked_by_others(run)
        else:
            _checkpoint(run, sizer, offset, next_offset, got, counters, done=done, error=error)
    except SweepTakenOver:
        _add_cost(run, got)
        raise
    return counters


def _count_checked_by_others(run: SweepRun) -> None:
    """At the end of the walk (in its last checkpoint's transaction): the rows checked within the
    walk's window that it did not count -- a per-course fetch checked them first, so the walk left
    them alone; or a page was written and its checkpoint lost (a crash, a duplicate walker) -- are
    counted as seen and superseded, as a chunk counts a row a fresher fetch wrote. One aggregate
    per walk."""
    run.refresh_from_db(fields=["walk_started_at", "walk_finished_at", "courses_seen"])
    checked = CourseOverview.objects.filter(
        catalog_checked_at__gte=run.walk_started_at, catalog_checked_at__lte=run.walk_finished_at
    ).count()
    others = checked - run.courses_seen  # the run has counted its walk's pages only, so far
    if others > 0:
        SweepRun.objects.filter(pk=run.pk).update(
            courses_seen=F("courses_seen") + others, courses_superseded=F("courses_superseded") + others
        )
        log.info(
            "catalog sweep: sweep #%s: %d course(s) checked by a per-course fetch during the walk",
            run.pk,
            others,
        )


def _checkpoint(
    run: SweepRun,
    sizer: PageSizer,
    offset: int,
    next_offset: int,
    got: _Fetch,
    counters: SyncCounters,
    *,
    done: bool,
    error: str = "",
) -> None:
    """Move the walk's checkpoint from ``offset`` to ``next_offset`` and add this page's counters:
    one UPDATE, guarded by the owner and the old position (a duplicate walker, or one whose run
    was taken over, changes nothing and stops)."""
    adds = {RUN_COUNTER_FIELDS[name]: getattr(counters, name) for name in COURSE_COUNTERS}
    adds.update(catalog_requests=got.requests, throttled=got.throttled, retries=got.retries)
    updated = SweepRun.objects.filter(
        pk=run.pk, status=SweepStatus.RUNNING, owner=run.owner, walk_offset=offset
    ).update(
        walk_offset=next_offset,
        walk_page_size=sizer.want,
        walk_page_cap=sizer.cap,
        walk_pages=F("walk_pages") + (1 if got.listed is not None else 0),
        walk_sizes=sizer.sizes,
        walk_done=done,
        walk_finished_at=timezone.now() if done else None,
        walk_error=error[:2000] if error else F("walk_error"),
        heartbeat_at=timezone.now(),
        **{name: F(name) + n for name, n in adds.items() if n},
    )
    if not updated:
        raise SweepTakenOver(f"sweep #{run.pk}'s walk is no longer this process's (at position {offset})")
    run.walk_offset, run.walk_done, run.walk_sizes = next_offset, done, sizer.sizes
