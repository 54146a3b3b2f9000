"""Walk + repair on the Celery path, at the wire: the coordinator, ``sweep_walk`` and the repair's
``sweep_chunk`` messages, each task called directly as a function (never eager mode), their
messages captured (``apply_async`` and ``_dispatch`` patched) and delivered by the test one at a
time, as a worker would. Every test ends with the overviews compared to the catalog's final state
and the run's record compared to what the catalog saw."""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
import responses
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from opaque_keys.edx.keys import CourseKey

from catalog import sweep as sweeps
from catalog import walk as walks
from catalog.mapping import RefusedRecord, map_course_run
from catalog.models import SweepRun, SweepStatus
from catalog.retry import RetryPolicy, in_process_policy
from catalog.sync import catalog_key_for
from overviews.models import CatalogStatus, CourseOverview
from standin import semantics
from tests.factories import CourseOverviewFactory, catalog_run
from tests.wire import WireCatalog

pytestmark = pytest.mark.django_db

# A retry policy whose waits are milliseconds: a page that keeps failing costs no test time.
QUICK = RetryPolicy(base=0.001, cap=0.001, max_retries=2, max_countdown=1.0)


@pytest.fixture
def wire(catalog_settings):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        catalog = WireCatalog(rsps)
        catalog.calls = rsps.calls  # every request the catalog saw, the token ones included
        catalog.rsps = rsps
        catalog.intercept = None  # request -> an answer, or None for the wire's own
        _route_list(catalog)
        yield catalog


def _route_list(wire) -> None:
    """Put ``wire.intercept`` in front of the wire's list route: unlike ``before_list`` it sees the
    request being answered (a walk page, or the repair's ``keys=``)."""
    real_list = wire._list

    def answer(request):
        if wire.intercept is not None and (got := wire.intercept(request)) is not None:
            return got.to_responses() if isinstance(got, semantics.Answer) else got
        return real_list(request)

    routes = [m for m in wire.rsps.registered() if getattr(m, "callback", None) == real_list]
    assert len(routes) == 1
    routes[0].callback = answer


def _params(request) -> dict[str, str]:
    return semantics.query_params(request.url.split("?", 1)[1] if "?" in request.url else "")


def _is_walk_page(request) -> bool:
    """An unfiltered list request other than the one-item count probe."""
    params = _params(request)
    return "keys" not in params and params.get("page_size") != "1"


def _courses(wire, n: int) -> list[CourseOverview]:
    rows = CourseOverviewFactory.create_batch(n)
    wire.add(*(catalog_run(str(ov.id)) for ov in rows))
    return rows


def _early(wire, n: int, prefix: str = "Old") -> list[str]:
    """``n`` runs the LMS does not have, sorting before every LMS course (``AAA`` < ``TestX``)."""
    keys = [f"course-v1:AAA+{prefix}{i:03d}+R" for i in range(n)]
    wire.add(*(catalog_run(key) for key in keys))
    return keys


def _wrong(wire) -> list[tuple[Any, ...]]:
    """Overviews whose catalog fields or status differ from the catalog's runs now (a CCX course
    takes its master's; a course the catalog lacks must be ``missing``; a refused record ``error``)."""
    by_lower = {key.lower(): run for key, run in wire.runs.items()}
    wrong = []
    for ov in CourseOverview.objects.all():
        key = catalog_key_for(str(ov.id))
        run = wire.runs.get(key) or by_lower.get(key.lower())
        if run is None:
            if ov.catalog_status != CatalogStatus.MISSING:
                wrong.append((str(ov.id), "should be missing", ov.catalog_status))
            continue
        try:
            expected = map_course_run(run)
        except RefusedRecord:
            if ov.catalog_status != CatalogStatus.ERROR:
                wrong.append((str(ov.id), "should be refused", ov.catalog_status))
            continue
        actual = {name: getattr(ov, name) for name in expected}
        if actual != expected or ov.catalog_status != CatalogStatus.OK:
            wrong.append((str(ov.id), expected, actual, ov.catalog_status, ov.catalog_error))
    return wrong


def _api_calls(wire) -> list[str]:
    return [call.request.url for call in wire.calls if "/course_runs/" in call.request.url]


def _walk_pages_asked(wire) -> list[tuple[int, int]]:
    """``(page, page_size)`` of every unfiltered list request (the probe and the walk's pages)."""
    asked = []
    for url in _api_calls(wire):
        params = semantics.query_params(url.split("?", 1)[1])
        if "keys" not in params:
            asked.append((int(params["page"]), int(params["page_size"])))
    return asked


def drifting(wire, *, deletes: int = 0, inserts: int = 0):
    """An ``intercept``: after every walk page but the last (an unfiltered list request other
    than the count probe), ``deletes`` runs leave the front of the list and ``inserts`` runs
    sorting before every other arrive, as the stand-in's ``delete_between_pages`` /
    ``insert_between_pages`` do. Only runs the LMS does not have are ever deleted (``_early``)."""
    seq = itertools.count()
    lms = {str(key) for key in CourseOverview.objects.values_list("id", flat=True)}
    pending = []

    def intercept(request):
        if pending:  # the page before this request is answered: the list moves now
            pending.clear()
            front = sorted(wire.runs, key=semantics.sort_key)[:deletes]
            assert not set(front) & lms, "the drift would delete an LMS course"
            for key in front:
                del wire.runs[key]
            for _ in range(inserts):
                wire.add(catalog_run(f"course-v1:AAA+New{next(seq):04d}+R"))
        if _is_walk_page(request):
            pending.append(1)
        return None

    return intercept


@dataclass
class Queue:
    """The messages the sweep's tasks sent, delivered in order by ``deliver``."""

    walks: list[tuple[tuple, float | None]] = field(default_factory=list)
    chunks: list[tuple] = field(default_factory=list)
    delivered: list[tuple[str, str]] = field(default_factory=list)  # (task, what it returned)
    sent: list[tuple[tuple, float | None]] = field(default_factory=list)  # every walk message sent

    def deliver(self, *, limit: int = 200, walks_only: bool = False) -> None:
        from tasks.sweep import sweep_chunk, sweep_walk

        for _ in range(limit):
            if self.walks:
                args, _countdown = self.walks.pop(0)
                self.delivered.append(("walk", sweep_walk(*args)))
            elif self.chunks and not walks_only:
                self.delivered.append(("chunk", sweep_chunk(*self.chunks.pop(0))))
            else:
                return
        raise AssertionError(f"still sending messages after {limit} deliveries: {self.delivered[-5:]}")

    def step(self) -> str:
        """Deliver the first walk message only."""
        from tasks.sweep import sweep_walk

        args, _countdown = self.walks.pop(0)
        returned = sweep_walk(*args)
        self.delivered.append(("walk", returned))
        return returned

    def returned(self, task: str) -> list[str]:
        return [what for name, what in self.delivered if name == task]


@pytest.fixture
def queue():
    """``sweep_walk.apply_async`` and ``_dispatch`` patched: their messages are kept, not sent."""
    from tasks.sweep import sweep_walk

    q = Queue()

    def send_walk(args, countdown=None, **_):
        q.walks.append((tuple(args), countdown))
        q.sent.append((tuple(args), countdown))

    def dispatch(run_id, chunk):
        q.chunks.append((run_id, chunk.pk, chunk.first_key, chunk.last_key))

    with (
        mock.patch.object(sweep_walk, "apply_async", side_effect=send_walk),
        mock.patch("tasks.sweep._dispatch", side_effect=dispatch),
    ):
        yield q


def _start(queue, page_size: int = 10) -> SweepRun:
    """The coordinator, as beat triggers it, told to walk: it chooses and sends the walk."""
    from tasks.sweep import sweep

    returned = sweep(trigger="beat", page_size=page_size, strategy="walk")
    run = SweepRun.objects.get()
    assert returned == f"sweep #{run.pk}: walking", returned
    assert run.strategy == "walk" and run.status == SweepStatus.RUNNING
    [(args, countdown)] = queue.walks
    assert args == (run.pk, run.owner) and countdown is None
    assert not queue.chunks  # the repair is dispatched by the walk, at its end
    return run


def _done(run: SweepRun) -> SweepRun:
    run.refresh_from_db()
    assert run.status == SweepStatus.COMPLETE, (run.status, run.error, run.walk_error)
    return run


def _recording_walk(slept: list[float]):
    """``tasks.sweep.walk`` with a sleep that records its waits and never sleeps."""
    return functools.partial(walks.walk, sleep=slept.append)


# -- the whole path ------------------------------------------------------------------------------


def test_the_coordinator_sends_the_walk_which_dispatches_the_repair_and_every_overview_ends_right(
    wire, queue
):
    rows = _courses(wire, 120)
    lms_only = CourseOverviewFactory()  # the catalog does not have it
    _early(wire, 60)
    wire.intercept = drifting(wire, deletes=4, inserts=1)  # the walk skips 3 runs a page

    run = _start(queue)
    queue.deliver()

    run = _done(run)
    assert _wrong(wire) == []
    assert CourseOverview.objects.get(pk=lms_only.pk).catalog_status == CatalogStatus.MISSING
    assert queue.returned("walk") == [f"sweep #{run.pk}: walked; {run.chunks_total} repair chunk(s)"]
    assert queue.returned("chunk") == ["done"] * run.chunks_total and run.chunks_total >= 1
    # every course once: the walk's and the repair's counts add up to the LMS, no more
    assert run.courses_seen == len(rows) + 1 == CourseOverview.objects.count()
    assert run.courses_updated == len(rows) and run.courses_missing == 1
    repaired = sum(run.chunks.values_list("seen", flat=True))
    assert repaired > 1  # skipped by the drift, and the LMS-only course
    assert run.catalog_requests == len(wire.calls)
    assert run.walk_done and not run.walk_error and run.walk_pages >= 3
    assert sum(pages for _, pages in run.walk_sizes) == run.walk_pages


def test_a_walk_message_for_a_run_taken_over_does_nothing(wire, queue):
    _courses(wire, 30)
    run = _start(queue)
    [(args, _)] = queue.walks
    queue.walks.clear()
    # the run was taken over (its heartbeat went stale; another trigger owns it now)
    SweepRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - sweeps.lease_ttl() * 2)
    taken = sweeps.start_sweep("beat")
    assert taken.pk == run.pk and taken.owner != run.owner
    calls = len(wire.calls)
    before = SweepRun.objects.values().get(pk=run.pk)

    from tasks.sweep import sweep_walk

    assert sweep_walk(*args) == "not-ours"
    assert len(wire.calls) == calls  # not a request
    assert SweepRun.objects.values().get(pk=run.pk) == before  # not a write
    assert not queue.walks and not queue.chunks


def _with_a_duplicate_delivery(queue, *, between=None):
    """``tasks.sweep.walk`` whose first delivery is a duplicate: before it walks, another delivery
    of the same walk (same run, same owner) walks one page and checkpoints, and its continuation
    is queued; ``between()`` runs after that page. The duplicate then walks from the position it
    read, which is stale."""
    real_walk = walks.walk
    first = []

    def walk(stale, client, **kwargs):
        if not first:
            live = SweepRun.objects.get(pk=stale.pk)
            first.append(real_walk(live, client, policy=kwargs["policy"], time_budget=0))
            assert SweepRun.objects.get(pk=stale.pk).walk_offset > stale.walk_offset
            queue.walks.append(((stale.pk, stale.owner), None))
            if between:
                between()
        return real_walk(stale, client, **kwargs)

    return mock.patch("tasks.sweep.walk", side_effect=walk)


def test_a_duplicate_walk_message_at_a_stale_position_stops_and_double_counts_nothing(wire, queue):
    """Two deliveries of the same walk (a redelivered message beside the live one): the one whose
    position is stale finds the checkpoint moved, stops as taken over, and counts nothing twice."""
    rows = _courses(wire, 80)
    run = _start(queue)

    with _with_a_duplicate_delivery(queue):
        queue.deliver()

    run = _done(run)
    assert queue.returned("walk")[0] == "taken-over"
    assert _wrong(wire) == []
    assert run.courses_seen == len(rows) and run.courses_updated == len(rows)
    assert run.walk_pages == sum(pages for _, pages in run.walk_sizes)


def test_a_duplicate_walk_messages_requests_are_still_counted(wire, queue):
    """A chunk finished twice keeps the duplicate's cost (``finish_chunk``: "its cost still
    counted"); a walk page fetched by a duplicate walker was sent all the same (found here: the
    duplicate's requests, and its prefetched page's, were dropped with its failed checkpoint)."""
    _courses(wire, 80)
    run = _start(queue)

    with _with_a_duplicate_delivery(queue):
        queue.deliver()

    run = _done(run)
    assert run.catalog_requests == len(wire.calls)


def test_a_duplicate_walker_on_a_moved_list_leaves_every_course_counted_once(wire, queue):
    """The duplicate's first page holds courses the live walker has not checked (the list moved
    between their requests): its writes must go with its failed checkpoint, or those courses are
    checked and never counted, by the walk or the repair (found here: seen was 75 of 80)."""
    rows = _courses(wire, 80)
    early = _early(wire, 5)  # the live walker's first page: these 5, then 5 LMS courses
    run = _start(queue)

    def the_list_moves():  # the duplicate's first page is 10 LMS courses, 5 beyond the live one's
        for key in early:
            del wire.runs[key]

    with _with_a_duplicate_delivery(queue, between=the_list_moves):
        queue.deliver()

    run = _done(run)
    assert _wrong(wire) == []
    assert run.courses_seen == len(rows)


# -- time, throttles and failures ---------------------------------------------------------------------


def test_the_walks_time_budget_sends_it_again_and_the_continuation_finishes(wire, queue):
    rows = _courses(wire, 150)
    run = _start(queue)
    with mock.patch("tasks.sweep.WALK_TASK_SECONDS", 0.0):  # every message walks one page
        queue.deliver()
    sent = queue.sent[1:]  # after the coordinator's

    run = _done(run)
    walked = queue.returned("walk")
    assert walked[:-1] == ["walked 1 page(s); going on"] * (len(walked) - 1)
    assert walked[-1].startswith(f"sweep #{run.pk}: walked;")
    assert len(walked) == run.walk_pages >= 4  # one page per message
    assert {countdown for _, countdown in sent} == {None}  # no wait asked for: straight on
    assert {args[:2] for args, _ in sent} == {(run.pk, run.owner)}
    assert _wrong(wire) == [] and run.courses_seen == len(rows)
    assert run.catalog_requests == len(wire.calls)
    # each message began where the last one's checkpoint was: no page asked twice
    pages = _walk_pages_asked(wire)[1:]  # after the probe
    assert len(pages) == len(set(pages)) == run.walk_pages


def test_a_page_cap_learnt_by_one_walk_message_holds_in_the_next_ones(wire, queue):
    """A catalog that caps its pages at 15: the walk learns the cap once; later messages (one page
    each here) never ask for more than the cap again."""
    rows = _courses(wire, 200)
    wire.max_page_size = 15
    run = _start(queue)
    with mock.patch("tasks.sweep.WALK_TASK_SECONDS", 0.0):
        queue.deliver()

    run = _done(run)
    assert _wrong(wire) == [] and run.courses_seen == len(rows)
    sizes = [size for _, size in _walk_pages_asked(wire)[1:]]
    assert len(queue.returned("walk")) == len(sizes) == run.walk_pages
    assert sum(size > 15 for size in sizes) == 1, sizes  # the page that showed the cap, only
    assert run.catalog_requests == len(wire.calls)


def test_a_long_retry_after_sends_the_walk_again_with_that_countdown_instead_of_sleeping(wire, queue):
    from tasks.sweep import WALK_LONGEST_SLEEP

    rows = _courses(wire, 60)
    run = _start(queue)
    queue.walks.clear()
    answers = iter([semantics.throttled(WALK_LONGEST_SLEEP * 4)])
    wire.before_list = lambda w: next(answers, None)
    slept: list[float] = []
    sent = []

    from tasks.sweep import sweep_walk

    with (
        mock.patch("tasks.sweep.walk", _recording_walk(slept)),
        mock.patch.object(
            sweep_walk, "apply_async", side_effect=lambda args, countdown=None, **_: sent.append(countdown)
        ),
    ):
        assert sweep_walk(run.pk, run.owner) == "walked 0 page(s); going on"
    assert slept == []
    assert sent == [pytest.approx(WALK_LONGEST_SLEEP * 4, abs=0.5)]
    run.refresh_from_db()
    assert (run.throttled, run.walk_offset, run.walk_done) == (1, 0, False)

    cache.clear()  # the fleet's pause has passed (the countdown): the continuation walks on
    queue.walks.append(((run.pk, run.owner), sent[0]))
    with mock.patch("tasks.sweep.walk", _recording_walk(slept)):
        queue.deliver()
    run = _done(run)
    assert slept == []
    assert _wrong(wire) == [] and run.courses_seen == len(rows)
    assert run.catalog_requests == len(wire.calls)


def test_a_page_that_keeps_failing_ends_the_walk_early_and_the_repair_covers_every_course(wire, queue):
    from tasks.sweep import sweep_walk

    rows = _courses(wire, 100)
    lms_only = CourseOverviewFactory()
    run = _start(queue)
    walk_pages = itertools.count(1)

    def fail_walk_pages_after_the_second(request):
        if "keys" not in _params(request) and next(walk_pages) > 2:  # the probe was answered
            return (503, {}, "<html>down</html>")
        return None

    wire.intercept = fail_walk_pages_after_the_second
    slept: list[float] = []
    with (
        mock.patch.object(sweep_walk, "retry_policy", QUICK),
        mock.patch("tasks.sweep.walk", _recording_walk(slept)),
    ):
        queue.deliver()

    run = _done(run)
    assert run.walk_done and "CatalogServerError" in run.walk_error and "position" in run.walk_error
    assert len(slept) == QUICK.max_retries and run.retries == QUICK.max_retries
    assert run.walk_pages == 2
    assert _wrong(wire) == []
    assert run.courses_seen == len(rows) + 1 and run.courses_updated == len(rows)
    assert CourseOverview.objects.get(pk=lms_only.pk).catalog_status == CatalogStatus.MISSING
    # the repair fetched by key every course the two pages did not check, once each
    walked = run.courses_seen - sum(run.chunks.values_list("seen", flat=True))
    assert sum(wire.requested_keys.values()) == len(rows) + 1 - walked  # the LMS-only one too
    assert set(wire.requested_keys.values()) == {1}
    assert run.catalog_requests == len(wire.calls)


def test_a_page_that_keeps_failing_on_the_task_policy_ends_the_walk_within_its_retry_budget(wire, queue):
    import celeryconfig as conf

    """A retry wait over ``WALK_LONGEST_SLEEP`` sends the walk again with that countdown; the
    retries spent on the page go with it, so 1 + 12 attempts end the walk whatever the messages
    (found here: the count started at 0 again in every message, and the walk never ended)."""
    from tasks.sweep import WALK_LONGEST_SLEEP

    rows = _courses(wire, 40)
    run = _start(queue)
    # every walk page (the probe was answered already): a 503, whatever its size
    wire.intercept = lambda request: (503, {}, "down") if "keys" not in _params(request) else None
    slept: list[float] = []
    # each backoff at its ceiling (2, 4, 8, 16, 32, 64, 120 s ...): from the fifth wait on, each
    # is over the longest sleep and is a new message
    with (
        mock.patch("catalog.retry.random.uniform", side_effect=lambda low, high: high),
        mock.patch("tasks.sweep.walk", _recording_walk(slept)),
    ):
        for _ in range(3 * conf.REFRESH_MAX_RETRIES):  # a count that never advanced would go on
            if queue.step() != "walked 0 page(s); going on":
                break
    run.refresh_from_db()
    assert run.walk_done and "CatalogServerError" in run.walk_error
    assert run.retries == conf.REFRESH_MAX_RETRIES
    assert slept == [2.0, 4.0, 8.0, 16.0]  # the waits up to the longest sleep, in the first message
    countdowns = [countdown for _, countdown in queue.sent[1:]]
    assert len(countdowns) == conf.REFRESH_MAX_RETRIES - len(slept)
    assert all(countdown > WALK_LONGEST_SLEEP for countdown in countdowns)
    attempts = sum(1 for url in _api_calls(wire) if "keys=" not in url) - 1  # not the probe
    assert attempts == 1 + conf.REFRESH_MAX_RETRIES
    queue.deliver()  # the repair: every course by key
    run = _done(run)
    assert _wrong(wire) == [] and run.courses_seen == len(rows)
    assert run.catalog_requests == len(wire.calls)


# -- resume --------------------------------------------------------------------------------------


def _walk_two_pages_then_die(wire, queue, n: int = 150) -> tuple[SweepRun, list[CourseOverview]]:
    rows = _courses(wire, n)
    _early(wire, 5)
    run = _start(queue)
    with mock.patch("tasks.sweep.WALK_TASK_SECONDS", 0.0):
        for _ in range(2):
            queue.step()
    run.refresh_from_db()
    assert run.walk_pages == 2 and not run.walk_done and run.walk_offset > 0
    # the worker died: its next message is lost with it; the heartbeat goes stale
    queue.walks.clear()
    SweepRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - sweeps.lease_ttl() - timedelta(1))
    return run, rows


def test_a_run_taken_over_mid_walk_resends_the_walk_from_its_checkpoint(wire, queue):
    from tasks.sweep import sweep, sweep_walk

    run, _ = _walk_two_pages_then_die(wire, queue)
    offset, size, old_owner = run.walk_offset, run.walk_page_size, run.owner
    asked_before = len(_walk_pages_asked(wire))

    assert sweep(trigger="beat") == f"sweep #{run.pk}: walking"
    resumed = SweepRun.objects.get()
    assert resumed.pk == run.pk and resumed.resumed == 1 and resumed.owner != old_owner
    assert resumed.strategy == "walk" and resumed.walk_offset == offset  # no new probe, no restart
    [(args, _)] = queue.walks
    assert args == (run.pk, resumed.owner)
    assert sweep_walk(run.pk, old_owner) == "not-ours"  # the dead worker's message, redelivered

    queue.deliver()
    run = _done(run)
    first_after = _walk_pages_asked(wire)[asked_before]
    assert first_after == (offset // size + 1, size)  # the page at the checkpoint, not page 1
    assert _wrong(wire) == []


def test_a_run_taken_over_mid_walk_keeps_what_its_walk_had_counted(wire, queue):
    """A walk adds its pages' counters to the run directly, with no chunk row: a takeover must
    not reset the run to the sum of its chunks (found here: it did, and lost the walk's counts)."""
    from tasks.sweep import sweep

    run, rows = _walk_two_pages_then_die(wire, queue)
    counted = SweepRun.objects.values_list("courses_seen", "catalog_requests").get(pk=run.pk)
    assert counted[0] > 0

    sweep(trigger="beat")
    after_takeover = SweepRun.objects.values_list("courses_seen", "catalog_requests").get(pk=run.pk)
    queue.deliver()
    run = _done(run)
    assert after_takeover == counted
    assert run.courses_seen == len(rows)
    assert run.catalog_requests == len(wire.calls)


# -- SQL per page ------------------------------------------------------------------------------------


@pytest.mark.parametrize("before", ["first-sweep", "no-change-sweep", "mixed-sweep"])
def test_a_walk_page_costs_at_most_three_sql_statements(wire, catalog_client, before):
    """Per walk page: one SELECT of its rows, one guarded UPDATE, the checkpoint's UPDATE. Pages
    of rows all changed, all unchanged, and mixed (changed, unchanged, a refused record, CCX)."""
    rows = _courses(wire, 400)
    _early(wire, 30)
    CourseOverviewFactory()  # the repair has one course to do
    if before == "mixed-sweep":
        for n, row in enumerate(rows[:40]):
            master = str(row.id).replace("course-v1:", "ccx-v1:")
            CourseOverviewFactory(id=CourseKey.from_string(f"{master}+ccx@{n}"))
    if before != "first-sweep":
        run = sweeps.start_sweep("command", page_size=25, in_process=True)
        run = sweeps.decide_strategy(run, catalog_client, forced="walk")
        assert sweeps.run_in_process(run, catalog_client, policy=in_process_policy(2)).status == "complete"
    if before == "mixed-sweep":
        for row in rows[::3]:
            wire.runs[str(row.id)]["marketing_url"] += "/changed"
        wire.runs[str(rows[100].id)]["marketing_url"] = "javascript:alert(1)"
    run = sweeps.start_sweep("command", page_size=25, in_process=True)
    run = sweeps.decide_strategy(run, catalog_client, forced="walk")
    per_page: list[list[str]] = []
    real_apply, real_checkpoint = walks._apply_page, walks._checkpoint

    def sql(queries) -> list[str]:
        return [
            q["sql"] for q in queries.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))
        ]

    def apply_page(*args, **kwargs):
        with CaptureQueriesContext(connection) as queries:
            counters = real_apply(*args, **kwargs)
        per_page.append(sql(queries))
        return counters

    def checkpoint(*args, **kwargs):
        with CaptureQueriesContext(connection) as queries:
            real_checkpoint(*args, **kwargs)
        per_page[-1].extend(sql(queries))

    with (
        mock.patch.object(walks, "_apply_page", apply_page),
        mock.patch.object(walks, "_checkpoint", checkpoint),
    ):
        run = sweeps.run_in_process(run, catalog_client, policy=in_process_policy(2))
    assert run.status == "complete" and _wrong(wire) == []
    assert len(per_page) == run.walk_pages >= 4
    assert max(len(statements) for statements in per_page) <= 3, per_page
    if before == "no-change-sweep":
        assert run.courses_updated == 0 and run.courses_unchanged == 400
    if before == "mixed-sweep":
        assert run.courses_refused == 1 and run.courses_updated > 100 and run.courses_unchanged > 200


# -- what the walk cannot see, and drift ---------------------------------------------------------------


def test_seen_equals_the_lms_courses_exactly_when_the_walk_sees_runs_twice(wire, queue):
    rows = _courses(wire, 200)
    _early(wire, 10)
    wire.intercept = drifting(wire, inserts=7)  # every page repeats runs of the one before

    run = _start(queue)
    queue.deliver()

    run = _done(run)
    assert _wrong(wire) == []
    assert run.courses_seen == len(rows) and run.courses_updated == len(rows)
    assert run.courses_unchanged == 0 and run.courses_missing == 0
    # the repeats were read and not counted again; nothing was skipped, so nothing to repair
    assert run.chunks_total == 0 and sum(wire.requested_keys.values()) == 0
    assert run.catalog_requests == len(wire.calls)


def test_a_list_that_shrinks_below_the_walks_position_ends_the_walk_and_the_repair_does_the_rest(wire, queue):
    """Runs deleted behind the walk until its next page is past the end (the catalog's 404
    ``Invalid page.``): the walk ends there, without an error, and every LMS course it never
    reached is fetched by key."""
    rows = _courses(wire, 20)
    early = _early(wire, 80)  # list order: 80 runs the LMS lacks, then the 20 LMS courses
    pages = itertools.count(1)

    def shrink_before_the_fourth_page(request):
        if "keys" not in _params(request) and next(pages) == 4:  # the probe was answered already
            for key in early[:75]:
                del wire.runs[key]
        return None

    run = _start(queue)
    wire.intercept = shrink_before_the_fourth_page
    queue.deliver()

    run = _done(run)
    assert run.walk_done and not run.walk_error
    statuses = [call.response.status_code for call in wire.calls if "keys=" not in call.request.url]
    assert statuses[-1] == 404  # the walk's last page: past the end
    assert _wrong(wire) == []
    assert wire.requested_keys == {str(row.id): 1 for row in rows}  # never walked: all repaired
    assert run.courses_seen == len(rows) and run.catalog_requests == len(wire.calls)


def test_a_course_published_mid_walk_keeps_its_fresher_data_and_is_counted_once(wire, queue, catalog_client):
    """A publish refreshes a course the walk has not reached yet, with data newer than the walk
    will read: the fresher data stays, and the run still counts every course once (as
    keys-batched does: a fresher row is ``superseded``, not left out). Found here: the walk and its
    repair skipped rows checked since the walk began, so it was counted nowhere."""
    from catalog.refresh import refresh_courses

    rows = _courses(wire, 120)
    late = rows[-1]  # on the walk's last page
    refreshed = []

    def publish_after_the_first_page(counters):
        if not refreshed:
            wire.runs[str(late.id)]["marketing_url"] = "https://fresh.example/published"
            outcome = refresh_courses([late.id], catalog_client)
            assert outcome.error is None and outcome.counters.updated == 1
            refreshed.append(1)

    run = _start(queue)
    with mock.patch("tasks.sweep.walk", functools.partial(walks.walk, on_page=publish_after_the_first_page)):
        queue.deliver()

    run = _done(run)
    assert CourseOverview.objects.get(pk=late.pk).marketing_url == "https://fresh.example/published"
    assert _wrong(wire) == []
    assert run.courses_seen == len(rows), (run.courses_seen, run.courses_superseded)


def test_ccx_courses_get_their_masters_data_and_are_counted_once(wire, queue):
    """A CCX course is not in the catalog's list: it takes its master's run, from the walk's page
    that lists the master or, failing that, from the repair, and counts once either way. One
    master is an LMS course; the other the LMS has only as CCX courses."""
    rows = _courses(wire, 40)
    masters = [str(rows[3].id), "course-v1:TestX+Elsewhere+2024_T1"]
    wire.add(catalog_run(masters[1], marketing_url="https://m.example/elsewhere"))
    ccx = [
        CourseOverviewFactory(id=CourseKey.from_string(master.replace("course-v1:", "ccx-v1:") + f"+ccx@{n}"))
        for master in masters
        for n in (1, 7)
    ]
    run = _start(queue)
    queue.deliver()

    run = _done(run)
    assert _wrong(wire) == []
    for row in ccx:
        row.refresh_from_db()
        master = wire.runs[catalog_key_for(str(row.id))]
        assert row.catalog_status == CatalogStatus.OK
        assert row.marketing_url == map_course_run(master)["marketing_url"]
    # a key the repair asked for, it asked for once, and only a master of a CCX course
    assert set(wire.requested_keys) <= set(masters) and set(wire.requested_keys.values()) <= {1}
    assert run.courses_seen == len(rows) + len(ccx) and run.courses_updated == len(rows) + len(ccx)
    assert run.catalog_requests == len(wire.calls)


def _keys_without_regard_to_case(wire):
    """An ``intercept`` answering ``keys=`` as course-discovery does (MySQL, a case-insensitive
    collation): without regard to case, with the catalog's own spelling. The shared semantics
    match exactly; unfiltered pages are the wire's own."""

    def intercept(request):
        wanted = semantics.keys_filter(_params(request))
        if wanted is None:
            return None
        wire.list_requests += 1
        wire.requested_keys.update(wanted)
        by_lower = {key.lower(): run for key, run in wire.runs.items()}
        aliased = {key: by_lower[key.lower()] for key in wanted if key.lower() in by_lower}
        return semantics.json_answer(200, semantics.list_body(request.url, aliased, client=wire.client_id))

    return intercept


def test_a_key_whose_case_differs_from_the_catalogs_is_right_through_the_repair(wire, queue):
    rows = _courses(wire, 30)
    ours = CourseOverviewFactory(id=CourseKey.from_string("course-v1:TestX+CaseMix+2024_T1"))
    wire.add(catalog_run("course-v1:testx+casemix+2024_t1", marketing_url="https://m.example/casemix"))
    wire.intercept = _keys_without_regard_to_case(wire)

    run = _start(queue)
    queue.deliver()

    run = _done(run)
    ours.refresh_from_db()
    assert (ours.marketing_url, ours.catalog_status) == ("https://m.example/casemix", CatalogStatus.OK)
    assert wire.requested_keys == {str(ours.id): 1}  # the walk could not match it; the repair did
    assert run.courses_seen == len(rows) + 1 and run.courses_missing == 0
    assert _wrong(wire) == []


def test_a_refused_record_in_a_walk_page_is_fetched_again_by_the_repair_and_counted_once(wire, queue):
    rows = _courses(wire, 60)
    hostile = str(rows[20].id)
    CourseOverview.objects.filter(id=rows[20].id).update(marketing_url="https://keep.example/x")
    wire.runs[hostile]["marketing_url"] = "javascript:alert(1)"

    run = _start(queue)
    queue.deliver()

    run = _done(run)
    row = CourseOverview.objects.get(id=rows[20].id)
    assert row.catalog_status == CatalogStatus.ERROR and "refused" in row.catalog_error
    assert row.marketing_url == "https://keep.example/x"  # the stored value kept
    assert wire.requested_keys == {hostile: 1}  # the walk's answer was no check: fetched again
    assert run.courses_refused == 1 and run.courses_seen == len(rows)
    assert run.courses_updated == len(rows) - 1
    assert _wrong(wire) == []


def test_a_walk_whose_repair_dispatch_fails_is_resumed_at_once_by_the_next_trigger(wire, queue):
    """As the coordinator does on the same failure: the run is abandoned (found here: it kept a
    fresh heartbeat, and the next trigger said already-running until the lease expired)."""
    from tasks.sweep import sweep

    rows = _courses(wire, 30)
    CourseOverviewFactory()  # the repair has a course to do
    run = _start(queue)
    with (
        mock.patch("tasks.sweep._dispatch", side_effect=OSError("broker down")),
        pytest.raises(OSError),
    ):
        queue.step()
    run.refresh_from_db()
    assert run.walk_done and run.status == SweepStatus.RUNNING

    assert sweep(trigger="beat") == f"sweep #{run.pk}: 1 chunk(s)"  # not "already-running"
    queue.deliver()
    run = _done(run)
    assert run.resumed == 1 and run.courses_seen == len(rows) + 1
