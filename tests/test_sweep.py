"""The durable sweep: single flight, checkpoint and resume, chunks counted once, fresher data wins,
and the fleet-wide throttle. Plain functions called directly; the catalog is mocked at the wire."""

from __future__ import annotations

from unittest import mock

import pytest
import responses
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from opaque_keys.edx.keys import CourseKey

from catalog import sweep as sweeps
from catalog.client import CatalogClient
from catalog.errors import CatalogThrottled
from catalog.models import CatalogIntegration, SweepStatus
from catalog.refresh import refresh_courses
from catalog.sync import SyncCounters
from catalog.throttle import FleetThrottle
from overviews.models import CourseOverview
from tests.factories import CourseOverviewFactory, catalog_run
from tests.wire import WireCatalog

pytestmark = pytest.mark.django_db


@pytest.fixture
def wire(catalog_settings):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield WireCatalog(rsps)


def _courses(wire, n, **overrides):
    rows = CourseOverviewFactory.create_batch(n)
    wire.add(*(catalog_run(str(ov.id), **overrides) for ov in rows))
    return rows


def _run(client, run, attempts=3):
    return sweeps.run_in_process(run, client, attempts=attempts, sleep=lambda s: None, backoff=lambda a, e: 0)


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
    assert run.catalog_requests == 3
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
        cache.delete(sweeps.LEASE_KEY)  # its lease expired: no heartbeat
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
    (chunk,) = next(sweeps.plan_chunks(run))
    outcome = sweeps.ChunkOutcome(SyncCounters(seen=4, updated=4))
    assert sweeps.finish_chunk(run.pk, chunk.pk, outcome) is True
    assert sweeps.finish_chunk(run.pk, chunk.pk, outcome) is False  # redelivered duplicate
    sweeps.mark_planning_done(run)
    run = sweeps.refresh_run(run)
    assert run.courses_seen == 4 and run.status == SweepStatus.COMPLETE


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


@pytest.mark.parametrize("courses", [100, 400])
def test_sql_queries_per_chunk_are_at_most_three(wire, catalog_client, courses):
    _courses(wire, courses)
    run = sweeps.start_sweep("beat", page_size=50)
    chunks = [c for batch in sweeps.plan_chunks(run) for c in batch]
    with CaptureQueriesContext(connection) as queries:
        for chunk in chunks:
            counters = sweeps.sync_chunk(chunk.first_key, chunk.last_key, catalog_client)
            with mock.patch.object(sweeps, "refresh_run"):  # the roll-up every 10 chunks, counted below
                sweeps.finish_chunk(run.pk, chunk.pk, sweeps.ChunkOutcome(counters))
    writes = [q for q in queries.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    assert len(writes) / len(chunks) <= 3, [q["sql"][:50] for q in writes[:6]]


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
    from catalog.models import SweepChunk
    from tasks.sweep import sweep_chunk

    _courses(wire, 6)
    run = sweeps.start_sweep("beat", page_size=10)
    (chunk,) = next(sweeps.plan_chunks(run))
    wire.before_list = lambda w: (403, {}, '{"detail": "forbidden"}')
    assert sweep_chunk(run.pk, chunk.pk, chunk.first_key, chunk.last_key) == "failed"
    chunk = SweepChunk.objects.get(pk=chunk.pk)
    assert chunk.status == "failed" and chunk.errored == 6 and "403" in chunk.error
    sweeps.mark_planning_done(run)
    run = sweeps.refresh_run(run)
    # its only chunk failed: the run failed (with some chunks done it would be "partial")
    assert run.status == SweepStatus.FAILED and run.courses_errored == 6 and run.chunks_failed == 1


def test_the_chunk_task_syncs_its_range_and_completes_the_run(wire):
    from tasks.sweep import sweep_chunk

    _courses(wire, 6)
    run = sweeps.start_sweep("beat", page_size=10)
    (chunk,) = next(sweeps.plan_chunks(run))
    sweeps.mark_planning_done(run)
    assert sweep_chunk(run.pk, chunk.pk, chunk.first_key, chunk.last_key) == "done"
    run.refresh_from_db()
    assert run.status == SweepStatus.COMPLETE and run.courses_updated == 6
    assert sweeps.lease_holder() is None


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
