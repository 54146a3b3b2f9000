"""The durable sweep: single flight, checkpoint and resume, chunks counted once, fresher data wins,
and the fleet-wide throttle. Plain functions called directly; the catalog is mocked at the wire.

The sweep's state is its rows: no test here clears or fakes a cache to steer it."""

from __future__ import annotations

import io
import itertools
from datetime import timedelta
from unittest import mock

import pytest
import responses
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection, transaction
from django.db.models import Sum
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from opaque_keys.edx.keys import CourseKey

from catalog import sweep as sweeps
from catalog.models import (
    SWEEP_COUNTERS,
    CatalogIntegration,
    ChunkStatus,
    RateWindow,
    SweepChunk,
    SweepRun,
    SweepStatus,
)
from catalog.refresh import refresh_courses
from catalog.retry import in_process_policy
from catalog.sync import SyncCounters
from catalog.throttle import FleetThrottle, admit
from catalog_client.client import CatalogClient
from catalog_client.errors import CatalogThrottled
from overviews.models import CourseOverview
from tests.factories import CourseOverviewFactory, catalog_run
from tests.wire import WireCatalog

pytestmark = pytest.mark.django_db


@pytest.fixture
def wire(catalog_settings):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        catalog = WireCatalog(rsps)
        catalog.calls = rsps.calls  # every request the catalog saw, the token ones included
        yield catalog


def _courses(wire, n, **overrides):
    rows = CourseOverviewFactory.create_batch(n)
    wire.add(*(catalog_run(str(ov.id), **overrides) for ov in rows))
    return rows


def _stale(run, by=timedelta(seconds=1)):
    """Make the run's last heartbeat older than the lease TTL (by ``by``)."""
    SweepRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - sweeps.lease_ttl() - by)


def _plan_all(run):
    return [chunk for batch in sweeps.plan_chunks(run) for chunk in batch]


def _assert_run_is_the_sum_of_its_chunks(run):
    run.refresh_from_db()
    sums = run.chunks.aggregate(**{name: Sum(name, default=0) for name in SWEEP_COUNTERS})
    assert sums == sweeps.run_counters(run)
    assert run.chunks_done == run.chunks.filter(status__in=["done", "failed"]).count()
    assert run.chunks_failed == run.chunks.filter(status="failed").count()


def _bounded_sleep(limit=50):
    """A sleep that records its waits and fails the test when retries never end."""
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        assert len(slept) < limit, "the retries never ended: the retry count did not advance"

    sleep.slept = slept
    return sleep


def _run(client, run, attempts=3):
    return sweeps.run_in_process(run, client, policy=in_process_policy(attempts), sleep=_bounded_sleep())


def test_a_second_trigger_during_a_sweep_does_nothing():
    first = sweeps.start_sweep("beat")
    assert first is not None
    assert sweeps.start_sweep("beat") is None
    assert sweeps.start_sweep("command", in_process=True) is None
    assert sweeps.lease_holder() == f"run:{first.pk}"


def test_a_sweep_syncs_everything_then_frees_the_lease(wire, catalog_client):
    _courses(wire, 25)
    run = _run(catalog_client, sweeps.start_sweep("command", page_size=10))
    assert run.status == SweepStatus.COMPLETE and run.finished_at
    assert (run.chunks_total, run.chunks_done, run.courses_seen, run.courses_updated) == (3, 3, 25, 25)
    assert run.catalog_requests == 4 == len(wire.calls)  # 3 chunks and the token request
    assert sweeps.lease_holder() is None
    again = _run(catalog_client, sweeps.start_sweep("command", page_size=10))
    assert (again.courses_updated, again.courses_unchanged) == (0, 25)


def test_a_dead_sweep_is_resumed_from_its_checkpoint_not_started_over(wire, catalog_client):
    rows = _courses(wire, 30)
    run = sweeps.start_sweep("beat", page_size=5)
    with mock.patch.object(sweeps, "PLAN_BATCH", 2):
        first_batch = next(sweeps.plan_chunks(run))  # planned 2 chunks, then the worker died
        for chunk in first_batch[:1]:  # one of them had finished
            counters = sweeps.sync_chunk(chunk.first_key, chunk.last_key, catalog_client)
            sweeps.finish_chunk(run.pk, chunk.pk, sweeps.ChunkOutcome(counters))
        assert run.cursor == str(sorted(str(r.id) for r in rows)[9])
        _stale(run)  # the worker died: no heartbeat for longer than the TTL
        wire.requested_keys.clear()

        resumed = sweeps.start_sweep("beat")
        assert resumed.pk == run.pk and resumed.resumed == 1
        done = _run(catalog_client, resumed)
    assert done.status == SweepStatus.COMPLETE
    assert done.chunks_total == 6 and done.courses_seen == 30
    # the finished chunk was not redone; every other course was fetched exactly once
    assert sum(wire.requested_keys.values()) == 25 and set(wire.requested_keys.values()) == {1}


def test_a_chunk_finished_twice_counts_once(wire, catalog_client):
    _courses(wire, 4)
    run = sweeps.start_sweep("beat", page_size=10)
    (chunk,) = _plan_all(run)
    outcome = sweeps.ChunkOutcome(SyncCounters(seen=4, updated=4, catalog_requests=1))
    assert sweeps.finish_chunk(run.pk, chunk.pk, outcome) is True
    assert sweeps.finish_chunk(run.pk, chunk.pk, outcome) is False  # redelivered duplicate
    run.refresh_from_db()
    assert (run.status, run.courses_seen, run.courses_updated, run.chunks_done) == ("complete", 4, 4, 1)
    # the duplicate's result is dropped; the request it sent is still counted, on both rows
    assert run.catalog_requests == 2 == SweepChunk.objects.get(pk=chunk.pk).catalog_requests


def test_page_size_is_read_from_the_admin_for_each_planning_step(wire, catalog_client):
    _courses(wire, 40)
    CatalogIntegration.objects.create(enabled=True, page_size=5)
    run = sweeps.start_sweep("beat")
    with mock.patch.object(sweeps, "PLAN_BATCH", 2):
        plan = sweeps.plan_chunks(run)
        assert [c.size for c in next(plan)] == [5, 5]
        CatalogIntegration.objects.create(enabled=True, page_size=10)
        cache.clear()
        assert [c.size for c in next(plan)] == [10, 10]


def test_failed_chunk_stops_the_in_process_sweep_keeps_data_and_frees_the_lease(wire, catalog_client):
    _courses(wire, 20)
    wire.before_list = lambda w: (503, {}, "down") if w.list_requests > 1 else None
    run = _run(catalog_client, sweeps.start_sweep("command", page_size=10), attempts=2)
    assert run.status == SweepStatus.FAILED and "CatalogServerError" in run.error
    assert run.courses_updated == 10
    assert sweeps.lease_holder() is None
    # the record tells the truth: the failed chunk, its two attempts, the token request
    assert (run.chunks_done, run.chunks_failed, run.retries) == (2, 1, 1)
    assert run.catalog_requests == 4 == len(wire.calls)
    assert run.courses_errored == 10


def test_a_first_chunk_failing_after_5_attempts_records_every_attempt_and_leaves_nothing_pending(
    wire, catalog_client
):
    _courses(wire, 20)
    wire.before_list = lambda w: (503, {}, "down")
    run = _run(catalog_client, sweeps.start_sweep("command", page_size=1), attempts=5)
    assert run.status == SweepStatus.FAILED and "after 5 attempt(s)" in run.error
    statuses = dict(run.chunks.values_list("seq", "status"))
    assert ChunkStatus.PENDING not in statuses.values()
    assert statuses[0] == ChunkStatus.FAILED
    assert {status for seq, status in statuses.items() if seq != 0} == {ChunkStatus.CANCELLED}
    assert (run.chunks_failed, run.retries) == (1, 4)
    # 5 attempts of chunk 0, the prefetch of chunk 1 and the token: all of them, and on the rows
    assert len(wire.calls) == 7 == run.catalog_requests
    _assert_run_is_the_sum_of_its_chunks(run)
    assert sweeps.start_sweep("command") is not None  # the lease is free


@pytest.mark.parametrize("courses", [100, 400])
def test_sql_queries_per_chunk_are_at_most_three(wire, catalog_client, courses):
    _courses(wire, courses)
    run = sweeps.start_sweep("beat", page_size=50)
    chunks = [c for batch in sweeps.plan_chunks(run) for c in batch]
    with CaptureQueriesContext(connection) as queries:
        for chunk in chunks:
            counters = sweeps.sync_chunk(chunk.first_key, chunk.last_key, catalog_client)
            sweeps.finish_chunk(run.pk, chunk.pk, sweeps.ChunkOutcome(counters))
    writes = [q for q in queries.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    # the sync: read the rows, one guarded write; the record: the chunk, the run's F() counters,
    # the completion check (its own statement, so that it sees every other finisher's commit)
    assert len(writes) / len(chunks) <= 5, [q["sql"][:50] for q in writes[:6]]
    run.refresh_from_db()
    assert run.status == SweepStatus.COMPLETE and run.courses_seen == courses


def test_a_chunk_never_overwrites_a_fresher_per_course_fetch(wire, client_config):
    (row,) = _courses(wire, 1, marketing_url="https://old.example/x")
    key = str(row.id)

    class RacingCatalog:
        """The chunk's answer arrives (old data); before the chunk writes, a publish's per-course
        fetch gets the new data and completes."""

        def __init__(self, inner):
            self.inner = inner
            self.requests_made = 0

        def get_course_runs(self, keys):
            answer = self.inner.get_course_runs(keys)
            wire.add(catalog_run(key, marketing_url="https://new.example/x"))
            with CatalogClient(client_config) as other:
                refresh_courses([row.id], other)
            return answer

    with CatalogClient(client_config) as inner:
        counters = sweeps.sync_chunk(key, key, RacingCatalog(inner))
    assert counters.superseded == 1 and counters.updated == 0
    assert CourseOverview.objects.get(id=key).marketing_url == "https://new.example/x"


def test_a_slow_per_course_answer_does_not_overwrite_a_fresher_chunk(wire, client_config):
    (row,) = _courses(wire, 1, marketing_url="https://old.example/x")
    key = str(row.id)

    class SlowCatalog:
        def __init__(self, inner):
            self.inner = inner
            self.requests_made = 0

        def get_course_runs(self, keys):
            answer = self.inner.get_course_runs(keys)  # the old data
            wire.add(catalog_run(key, marketing_url="https://new.example/x"))
            with CatalogClient(client_config) as other:  # a sweep chunk sent later, finished first
                sweeps.sync_chunk(key, key, other)
            return answer

    with CatalogClient(client_config) as inner:
        refresh_courses([CourseKey.from_string(key)], SlowCatalog(inner))
    assert CourseOverview.objects.get(id=key).marketing_url == "https://new.example/x"


def test_a_429_pauses_every_client_until_retry_after(wire, client_config):
    wire.before_list = lambda w: (
        (429, {"Retry-After": "30"}, '{"detail": "Request was throttled."}') if w.list_requests == 1 else None
    )
    now = [1000.0]
    first = CatalogClient(client_config, gate=FleetThrottle(clock=lambda: now[0]))
    second = CatalogClient(client_config, gate=FleetThrottle(clock=lambda: now[0]))
    with pytest.raises(CatalogThrottled) as info:
        first.get_course_runs(["course-v1:A+B+C"])
    assert info.value.retry_after == 30
    # another worker's client does not even send its request while the fleet is paused
    with pytest.raises(CatalogThrottled) as info:
        second.get_course_runs(["course-v1:A+B+C"])
    assert 29 <= info.value.retry_after <= 30 and wire.list_requests == 1
    now[0] += 31
    assert second.get_course_runs(["course-v1:A+B+C"]) == {}
    assert wire.list_requests == 2


def test_the_fleet_rate_limit_spreads_requests_over_seconds():
    now = [5000.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    gates = [FleetThrottle(rate_per_second=2, clock=lambda: now[0], sleep=sleep) for _ in range(3)]
    for gate in gates * 2:  # six requests from three workers
        gate.before_request()
    assert now[0] - 5000.0 >= 2  # 2 per second: the 3rd and 5th waited for the next second
    assert len(slept) == 2


def test_the_chunk_task_records_a_permanent_failure_with_its_courses_errored(wire):
    from tasks.sweep import sweep_chunk

    _courses(wire, 6)
    run = sweeps.start_sweep("beat", page_size=10)
    (chunk,) = _plan_all(run)
    wire.before_list = lambda w: (403, {}, '{"detail": "forbidden"}')
    assert sweep_chunk(run.pk, chunk.pk, chunk.first_key, chunk.last_key) == "failed"
    chunk = SweepChunk.objects.get(pk=chunk.pk)
    assert chunk.status == "failed" and chunk.errored == 6 and "403" in chunk.error
    run.refresh_from_db()
    # its only chunk failed: the run failed (with some chunks done it would be "partial")
    assert run.status == SweepStatus.FAILED and run.courses_errored == 6 and run.chunks_failed == 1
    assert run.catalog_requests == 2 == len(wire.calls)  # the token and the refused request


def test_the_chunk_task_syncs_its_range_and_completes_the_run(wire):
    from tasks.sweep import sweep_chunk

    _courses(wire, 6)
    run = sweeps.start_sweep("beat", page_size=10)
    (chunk,) = _plan_all(run)
    assert sweep_chunk(run.pk, chunk.pk, chunk.first_key, chunk.last_key) == "done"
    run.refresh_from_db()
    assert run.status == SweepStatus.COMPLETE and run.courses_updated == 6
    assert sweeps.lease_holder() is None
    # a redelivered copy does nothing, not even a catalog request
    calls = len(wire.calls)
    assert sweep_chunk(run.pk, chunk.pk, chunk.first_key, chunk.last_key) == "already-finished"
    assert len(wire.calls) == calls


def _deliver_chunk(chunk, retries: int):
    """One delivery of a chunk's message with this retry count, as a worker runs it: what the task
    returned, or the options of the message it sent for its retry."""
    from celery.exceptions import Retry

    from tasks.sweep import sweep_chunk

    args = (chunk.run_id, chunk.pk, chunk.first_key, chunk.last_key)
    sweep_chunk.push_request(args=args, kwargs={}, retries=retries, id="chunk-1", called_directly=False)
    try:
        with mock.patch.object(sweep_chunk, "apply_async") as apply_async:
            try:
                return sweep_chunk.run(*args), None
            except Retry:
                (options,) = [c.kwargs for c in apply_async.call_args_list]
                return None, options
    finally:
        sweep_chunk.pop_request()


def test_the_chunk_task_counts_each_failed_attempt_on_the_rows_as_it_happens(wire):
    _courses(wire, 6)
    run = sweeps.start_sweep("beat", page_size=10)
    (chunk,) = _plan_all(run)
    wire.before_list = lambda w: (503, {}, "down") if w.list_requests <= 2 else None
    retries = 0
    for attempt in range(2):
        returned, options = _deliver_chunk(chunk, retries)
        assert returned is None and options["retries"] == attempt + 1  # Celery's count, advanced
        retries = options["retries"]
        row = SweepChunk.objects.get(pk=chunk.pk)
        assert (row.status, row.retries) == ("pending", attempt + 1)
    assert _deliver_chunk(chunk, retries) == ("done", None)
    run.refresh_from_db()
    assert run.status == SweepStatus.COMPLETE and (run.retries, run.courses_updated) == (2, 6)
    assert run.catalog_requests == 4 == len(wire.calls)  # token, two 503s, the answer
    _assert_run_is_the_sum_of_its_chunks(run)


def test_the_chunk_task_spends_celerys_retry_count_then_fails_the_chunk_on_its_rows(wire):
    import celeryconfig as conf

    rows = _courses(wire, 4)
    CourseOverview.objects.filter(id=rows[0].id).update(marketing_url="https://keep.example/x")
    run = sweeps.start_sweep("beat", page_size=10)
    (chunk,) = _plan_all(run)
    wire.before_list = lambda w: (503, {}, "down")
    seen, retries = [], 0
    for _ in range(3 * conf.REFRESH_MAX_RETRIES):  # a count that never advanced would loop on
        returned, options = _deliver_chunk(chunk, retries)
        if returned is not None:
            break
        retries = options["retries"]
        seen.append(retries)
    assert returned == "failed"
    assert seen == list(range(1, conf.REFRESH_MAX_RETRIES + 1))
    row = SweepChunk.objects.get(pk=chunk.pk)
    assert (row.status, row.retries, row.errored) == ("failed", conf.REFRESH_MAX_RETRIES, 4)
    # the failure is on every course of the chunk, with its values kept ("last attempted" too)
    courses = CourseOverview.objects.order_by("id")
    assert {(c.catalog_status, "503" in c.catalog_error) for c in courses} == {("error", True)}
    assert all(c.catalog_attempted_at is not None for c in courses)
    assert CourseOverview.objects.get(id=rows[0].id).marketing_url == "https://keep.example/x"


def test_a_fleet_pause_sends_the_chunk_again_without_spending_a_retry(wire):
    _courses(wire, 3)
    run = sweeps.start_sweep("beat", page_size=10)
    (chunk,) = _plan_all(run)
    pause = CatalogThrottled("fleet paused", status=None, retry_after=7)
    with mock.patch("tasks.sweep.sync_chunk", side_effect=pause):
        returned, options = _deliver_chunk(chunk, 12)  # even with the budget spent
    assert returned is None and (options["retries"], options["countdown"]) == (12, 7)
    assert SweepChunk.objects.get(pk=chunk.pk).retries == 0  # a pause spends none


def test_a_rate_below_one_per_second_spaces_requests_instead_of_blocking_them():
    now = [18 * 1000.0]  # the start of an 18-second window
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    gate = FleetThrottle(rate_per_second=200 / 3600, clock=lambda: now[0], sleep=sleep)
    assert (gate.window, gate.allowed) == (18, 1)
    gate.before_request()  # the window's one request goes through at once
    gate.before_request()  # the next waits in-process for the next window
    assert slept == [18.0]


def test_a_rate_slot_too_far_away_is_waited_out_as_a_pause():
    now = [100 * 1000.0]
    gate = FleetThrottle(rate_per_second=0.01, clock=lambda: now[0], sleep=lambda s: None)
    gate.before_request()
    with pytest.raises(CatalogThrottled) as info:  # 100-second slots: longer than an in-task wait
        gate.before_request()
    assert info.value.status is None and 99 <= info.value.retry_after <= 100


def test_a_large_page_size_is_planned_as_chunks_of_one_request_each(wire, catalog_client):
    _courses(wire, 300)
    run = _run(catalog_client, sweeps.start_sweep("command", page_size=1000))
    assert run.status == SweepStatus.COMPLETE and run.courses_updated == 300
    # 300 keys of ~36 encoded characters do not fit one 4 KB URL: several chunks, one request each
    assert run.chunks_total > 1 and wire.list_requests == run.chunks_total


# -- completion and counters from the rows ---------------------------------------------------


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
@pytest.mark.parametrize("finished_before_planning_done", [0, 2, 3])
def test_the_last_finisher_completes_the_run_whatever_the_order(order, finished_before_planning_done):
    CourseOverviewFactory.create_batch(3)
    run = sweeps.start_sweep("beat", page_size=1)
    with mock.patch.object(sweeps, "PLAN_BATCH", 1):
        plan = sweeps.plan_chunks(run)
        chunks = [next(plan)[0] for _ in range(3)]  # all planned; planning_done not yet known
        outcome = sweeps.ChunkOutcome(SyncCounters(seen=1, updated=1, catalog_requests=1))
        for position, index in enumerate(order):
            if position == finished_before_planning_done:
                assert list(plan) == []  # planning ends (and completes the run if all are done)
            assert SweepRun.objects.get(pk=run.pk).status == SweepStatus.RUNNING
            assert sweeps.finish_chunk(run.pk, chunks[index].pk, outcome)
        if finished_before_planning_done == 3:
            assert SweepRun.objects.get(pk=run.pk).status == SweepStatus.RUNNING
            assert list(plan) == []
    run.refresh_from_db()
    assert run.status == SweepStatus.COMPLETE and run.finished_at
    assert (run.chunks_done, run.courses_seen, run.catalog_requests) == (3, 3, 3)
    _assert_run_is_the_sum_of_its_chunks(run)


def test_a_partial_run_is_counted_from_its_chunks():
    CourseOverviewFactory.create_batch(4)
    run = sweeps.start_sweep("beat", page_size=2)
    first, second = _plan_all(run)
    sweeps.record_attempt(run.pk, first.pk, requests=2, throttled=1, retried=True)
    sweeps.finish_chunk(run.pk, first.pk, sweeps.ChunkOutcome(SyncCounters(seen=2, unchanged=2), requests=1))
    sweeps.finish_chunk(run.pk, second.pk, sweeps.ChunkOutcome(SyncCounters(), requests=3, error="boom"))
    run.refresh_from_db()
    assert run.status == SweepStatus.PARTIAL and (run.chunks_done, run.chunks_failed) == (2, 1)
    assert (run.courses_unchanged, run.courses_errored, run.catalog_requests) == (2, 2, 6)
    assert (run.retries, run.throttled) == (1, 1)
    _assert_run_is_the_sum_of_its_chunks(run)


# -- the lease is the running row ------------------------------------------------------------


def test_the_database_holds_at_most_one_running_sweep():
    SweepRun.objects.create(status=SweepStatus.RUNNING)
    with pytest.raises(IntegrityError), transaction.atomic():
        SweepRun.objects.create(status=SweepStatus.RUNNING)
    SweepRun.objects.create(status=SweepStatus.COMPLETE)
    SweepRun.objects.create(status=SweepStatus.COMPLETE)


def test_a_running_sweep_is_taken_over_only_once_its_heartbeat_is_older_than_the_ttl(settings):
    settings.CATALOG_SWEEP_LEASE_TTL = 60
    cache.clear()  # nothing of the lease is in the cache: clearing it changes nothing
    run = sweeps.start_sweep("beat")
    _stale(run, by=timedelta(seconds=-5))  # 55 s without a heartbeat: alive
    assert sweeps.start_sweep("beat") is None
    _stale(run)  # 61 s: dead
    seen_stale = SweepRun.objects.get(pk=run.pk)
    resumed = sweeps.start_sweep("command", in_process=True)
    assert resumed.pk == run.pk and resumed.resumed == 1 and resumed.owner != run.owner
    # the old owner can neither heartbeat nor stop it any more; the new one can
    assert not sweeps.heartbeat(run.pk, run.owner)
    assert sweeps.stop_run(run, "late").status == SweepStatus.RUNNING
    assert sweeps.heartbeat(run.pk, resumed.owner)
    # a second trigger that saw the same stale heartbeat loses the compare-and-set
    assert sweeps._take_over(seen_stale, "another", timezone.now(), "beat") is None
    assert SweepRun.objects.get(pk=run.pk).resumed == 1


def test_a_resumed_run_whose_chunks_had_all_finished_completes_at_once():
    CourseOverviewFactory.create_batch(2)
    run = sweeps.start_sweep("beat", page_size=1)
    for chunk in _plan_all(run):
        SweepChunk.objects.filter(pk=chunk.pk).update(status=ChunkStatus.DONE, seen=1, updated=1)
    # a run left by a version that kept its counters lazily: stale counters, still running
    SweepRun.objects.filter(pk=run.pk).update(status=SweepStatus.RUNNING, chunks_done=1, courses_seen=0)
    _stale(run)
    resumed = sweeps.start_sweep("beat")
    assert resumed.status == SweepStatus.COMPLETE and (resumed.chunks_done, resumed.courses_seen) == (2, 2)


def test_a_coordinator_that_fails_mid_dispatch_is_resumed_at_once_by_the_next_trigger(wire):
    from tasks.sweep import sweep

    _courses(wire, 30)
    with mock.patch("tasks.sweep._dispatch", side_effect=OSError("broker down")), pytest.raises(OSError):
        sweep(trigger="beat", page_size=5, strategy="keys")
    run = SweepRun.objects.get()
    assert run.status == SweepStatus.RUNNING and run.heartbeat_at is None  # no TTL to wait out
    with mock.patch("tasks.sweep._dispatch") as dispatch:
        assert sweep(trigger="beat") == f"sweep #{run.pk}: 6 chunk(s)"
    assert dispatch.call_count == 6 and SweepRun.objects.get().resumed == 1


def test_a_redelivered_coordinator_takes_over_its_own_run_at_once(wire):
    """A coordinator SIGKILLed mid-planning and redelivered at once (RabbitMQ) keeps its task id:
    it resumes the run its killed execution started, whose heartbeat is still fresh, while any
    other trigger is still refused (found by the chaos soak)."""
    from tasks.sweep import _owner_token

    _courses(wire, 30)
    mine = _owner_token("5bd56ed3-0000-4000-8000-000000000001")
    assert mine == _owner_token("5bd56ed3-0000-4000-8000-000000000001") and len(mine) == 32
    run = sweeps.start_sweep("beat", page_size=5, owner=mine)
    assert sweeps.start_sweep("beat", owner=_owner_token("another-trigger")) is None
    resumed = sweeps.start_sweep("beat", owner=mine)
    assert resumed is not None and resumed.pk == run.pk and resumed.resumed == 1
    assert SweepRun.objects.filter(status=SweepStatus.RUNNING).count() == 1


# -- never strand the lease ------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["0", "2001", "99999999999999999999999"])
@pytest.mark.parametrize("run_async", [False, True])
def test_a_page_size_outside_the_admins_range_exits_2_and_starts_nothing(wire, bad, run_async):
    _courses(wire, 3)
    args = ["sync_catalog", "--no-progress", "--page-size", bad] + (["--async"] if run_async else [])
    with pytest.raises(CommandError) as info:
        call_command(*args, stdout=io.StringIO(), stderr=io.StringIO())
    assert info.value.returncode == 2
    assert str(info.value) == f"--page-size must be between 1 and 2000 (got {bad})"
    assert not SweepRun.objects.exists() and len(wire.calls) == 0


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_an_exception_mid_chunk_stops_the_run_and_frees_the_lease(wire, catalog_client, error):
    _courses(wire, 30)
    real_apply, calls = sweeps.apply_runs, []

    def apply_then_fail(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise error
        return real_apply(*args, **kwargs)

    with mock.patch.object(sweeps, "apply_runs", apply_then_fail), pytest.raises(type(error)):
        _run(catalog_client, sweeps.start_sweep("command", page_size=10))
    run = SweepRun.objects.get()
    assert run.status == SweepStatus.FAILED and f"interrupted: {type(error).__name__}" in run.error
    assert run.courses_updated == 10  # what was written stays
    assert not run.chunks.filter(status=ChunkStatus.PENDING).exists()
    assert sweeps.lease_holder() is None and sweeps.start_sweep("command") is not None


def test_sync_catalog_interrupted_frees_the_lease_and_exits_through(wire):
    _courses(wire, 12)
    with (
        mock.patch.object(sweeps, "apply_runs", side_effect=KeyboardInterrupt),
        pytest.raises(KeyboardInterrupt),
    ):
        call_command("sync_catalog", "--no-progress", "--page-size", "5", stdout=io.StringIO())
    run = SweepRun.objects.get()
    assert run.status == SweepStatus.FAILED and "KeyboardInterrupt" in run.error
    assert not run.chunks.filter(status=ChunkStatus.PENDING).exists()
    out = io.StringIO()
    call_command("sync_catalog", "--no-progress", "--page-size", "5", stdout=out)  # not blocked
    assert "sync_catalog complete" in out.getvalue()


# -- the fleet rate window is a row ----------------------------------------------------------


def test_the_rate_window_is_counted_in_the_database_not_the_cache():
    now = [7000.0]
    gates = [FleetThrottle(rate_per_second=3, clock=lambda: now[0], sleep=lambda s: None) for _ in range(2)]
    for gate in gates:
        gate.before_request()
        cache.clear()  # an evicted or lost cache entry must not reset the budget
    gates[0].before_request()
    assert RateWindow.objects.get(seconds=1, number=7000).used == 3
    assert not admit(1, 7000, 3)  # the window is full for every worker
    now[0] += 5  # a later window starts: the old rows go
    gates[1].before_request()
    assert list(RateWindow.objects.values_list("number", "used")) == [(7005, 1)]


def test_an_in_process_sweep_taken_over_while_it_waited_stops_and_leaves_the_run_to_its_new_owner(
    wire, catalog_client
):
    _courses(wire, 10)
    wire.before_list = lambda w: (503, {}, "down") if w.list_requests == 1 else None
    run = sweeps.start_sweep("command", page_size=5, in_process=True)
    first_owner, taken = run.owner, []

    def sleep(seconds):  # the backoff outlasted the TTL: a beat tick took the run over meanwhile
        _stale(run)
        taken.append(sweeps.start_sweep("beat"))

    result = sweeps.run_in_process(run, catalog_client, policy=in_process_policy(3), sleep=sleep)
    assert taken[0].pk == run.pk and result.status == SweepStatus.RUNNING
    assert result.owner == taken[0].owner != first_owner
    assert result.chunks.filter(status=ChunkStatus.PENDING).count() == 2  # left for the new owner


# -- production clients are built with the fleet throttle --------------------------------------


@pytest.mark.parametrize("build", ["build_client", "shared_client"])
def test_production_clients_carry_the_fleet_throttle_at_the_configured_rate(wire, build):
    """Every catalog request of a task, a sweep or a command goes through the fleet-wide gate:
    a client built without it would let each worker spend the catalog's quota on its own."""
    from catalog import connection as catalog_connection

    CatalogIntegration.objects.create(enabled=True, rate_limit_per_second=50)
    rows = _courses(wire, 3)
    client = getattr(catalog_connection, build)()
    assert isinstance(client.gate, FleetThrottle) and client.gate.rate == 50
    client.get_course_runs([str(ov.id) for ov in rows])
    # every API request it sent took a slot of the shared rate window (the token request is not
    # an API request: the catalog's throttle does not count it)
    assert RateWindow.objects.aggregate(used=Sum("used"))["used"] == wire.list_requests == 1
    if build == "build_client":
        client.close()


def test_the_ten_counters_are_declared_once_and_every_record_carries_each(wire):
    """``SWEEP_COUNTERS`` is the list: the chunk and run rows, the roll-up and the command's
    summary line are derived from it, and the sync's own counters match its course counters."""
    import dataclasses

    from catalog.models import COURSE_COUNTERS, RUN_COUNTER_FIELDS

    assert len(SWEEP_COUNTERS) == len(set(SWEEP_COUNTERS)) == 10
    sync_fields = {f.name for f in dataclasses.fields(SyncCounters)}
    assert sync_fields == {*COURSE_COUNTERS, "catalog_requests", "ignored"}
    for name in SWEEP_COUNTERS:
        assert SweepChunk._meta.get_field(name).default == 0
        assert SweepRun._meta.get_field(RUN_COUNTER_FIELDS[name]).default == 0

    # every counter reaches the run, and the command prints each with the run's value
    rows = _courses(wire, 7)
    CourseOverview.objects.filter(id=rows[0].id).update(marketing_url="https://m.example/x")
    wire.before_list = lambda w: (503, {}, "down") if w.list_requests == 1 else None
    out = io.StringIO()
    call_command("sync_catalog", "--no-progress", "--page-size", "3", "--strategy", "keys", stdout=out)
    run = SweepRun.objects.get()
    summary = dict(part.split("=", 1) for part in out.getvalue().split() if "=" in part)
    assert {name: int(summary[name]) for name in SWEEP_COUNTERS} == sweeps.run_counters(run)
    assert (run.courses_seen, run.retries, run.catalog_requests) == (7, 1, 5)  # token, 503, 3 pages
    _assert_run_is_the_sum_of_its_chunks(run)
