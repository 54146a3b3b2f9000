"""Edges of the sweep's bookkeeping that ``make mutation`` found unpinned: each operation touches
its own run and nothing else, stamps the times it promises, and sums what it says it sums.

Most sweep tests hold one run, where "this run" and "every run" cannot be told apart; here an
older, finished run with its own chunks sits beside the running one.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import responses
from django.db import transaction
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from api import metrics as api_metrics
from catalog import sweep as sweeps
from catalog.models import SWEEP_COUNTERS, ChunkStatus, SweepChunk, SweepRun, SweepStatus
from catalog.retry import in_process_policy
from catalog.sync import SyncCounters
from overviews.models import CourseOverview
from standin import semantics
from tests.factories import CourseOverviewFactory, catalog_run
from tests.wire import WireCatalog

pytestmark = pytest.mark.django_db

LONG_AGO = timedelta(hours=3)


@pytest.fixture
def wire():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield WireCatalog(rsps)


def _throttled_once(wire):
    """The catalog answers the first list request 429 (Retry-After: 1), then as usual."""
    wire.before_list = lambda w: semantics.throttled(1) if w.list_requests == 1 else None


def _old_run(owner: str) -> SweepRun:
    """A finished run with the same owner token, a heartbeat and a chunk still marked pending."""
    beat = timezone.now() - LONG_AGO
    old = SweepRun.objects.create(trigger="beat", status=SweepStatus.FAILED, heartbeat_at=beat, owner=owner)
    SweepChunk.objects.create(run=old, seq=0, first_key="a", last_key="b", size=2)
    return old


def _running(owner: str = "me") -> SweepRun:
    run = sweeps.start_sweep("command", owner=owner)
    assert run is not None
    for seq in range(2):
        SweepChunk.objects.create(
            run=run, seq=seq, first_key=f"course-v1:Z+Z{seq}+A", last_key=f"course-v1:Z+Z{seq}+Z", size=5
        )
    return run


def _beat(run: SweepRun):
    return SweepRun.objects.values_list("heartbeat_at", flat=True).get(pk=run.pk)


def test_the_lease_ttl_is_the_setting_or_ten_minutes(settings):
    settings.CATALOG_SWEEP_LEASE_TTL = 42
    assert sweeps.lease_ttl() == timedelta(seconds=42)
    del settings.CATALOG_SWEEP_LEASE_TTL
    assert sweeps.lease_ttl() == timedelta(seconds=600)


def test_a_heartbeat_renews_only_the_running_run_it_names():
    run = _running()
    old = _old_run(run.owner)
    SweepRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - LONG_AGO)
    before_old = _beat(old)
    assert sweeps.heartbeat(old.pk) is False  # finished: not renewed
    assert _beat(old) == before_old and _beat(run) < timezone.now() - LONG_AGO / 2
    assert sweeps.heartbeat(run.pk) is True
    assert timezone.now() - _beat(run) < timedelta(minutes=1)
    assert sweeps.heartbeat(run.pk, owner="someone else") is False


def test_abandon_clears_the_heartbeat_of_its_own_running_run_only():
    run = _running()
    old = _old_run(run.owner)
    before_old = _beat(old)
    sweeps.abandon(old)  # not running: untouched, and the running run is not touched either
    assert _beat(old) == before_old and _beat(run) is not None
    sweeps.abandon(SweepRun(pk=run.pk, owner="a taker-over"))  # not its owner: untouched
    assert _beat(run) is not None
    sweeps.abandon(run)
    assert _beat(run) is None


def test_stopping_a_run_fails_it_and_cancels_its_pending_chunks_only():
    run = _running()
    old = _old_run(run.owner)
    stopped = sweeps.stop_run(run, "E" * 5000)
    assert stopped.status == SweepStatus.FAILED and stopped.error == "E" * 2000
    assert stopped.finished_at is not None and timezone.now() - stopped.finished_at < timedelta(minutes=1)
    chunks = list(run.chunks.all())
    assert {c.status for c in chunks} == {ChunkStatus.CANCELLED}
    assert all(c.finished_at is not None and c.error == f"not run: sweep #{run.pk} stopped" for c in chunks)
    # the other run's chunk is not this run's to cancel
    assert old.chunks.get().status == ChunkStatus.PENDING
    # stopping a run that is no longer running changes nothing
    again = sweeps.stop_run(old, "late")
    assert again.error == "" and old.chunks.get().status == ChunkStatus.PENDING


def test_only_the_owner_stops_a_run():
    run = _running()
    sweeps.stop_run(SweepRun(pk=run.pk, owner="a taker-over"), "not mine")
    run.refresh_from_db()
    assert run.status == SweepStatus.RUNNING and run.finished_at is None
    assert set(run.chunks.values_list("status", flat=True)) == {ChunkStatus.PENDING}


def test_a_take_over_renews_the_heartbeat_and_counts_the_resume():
    run = _running(owner="first")
    SweepRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - LONG_AGO)
    taken = sweeps.start_sweep("beat", owner="second")
    assert taken.pk == run.pk and taken.owner == "second" and taken.resumed == 1
    assert timezone.now() - taken.heartbeat_at < timedelta(minutes=1)


def test_a_run_stopped_since_it_was_read_is_not_taken_over():
    run = _running(owner="first")
    SweepRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - LONG_AGO)
    run.refresh_from_db()  # read as running and stale ...
    SweepRun.objects.filter(pk=run.pk).update(status=SweepStatus.FAILED)  # ... then stopped
    assert sweeps._take_over(run, "second", timezone.now(), "beat") is None
    assert SweepRun.objects.get(pk=run.pk).owner == "first"


def test_reconcile_sets_the_run_to_the_sum_of_its_chunks():
    run = _running()
    first, second = run.chunks.order_by("seq")
    SweepChunk.objects.filter(pk=first.pk).update(
        status=ChunkStatus.DONE, seen=5, updated=2, catalog_requests=3
    )
    SweepChunk.objects.filter(pk=second.pk).update(status=ChunkStatus.FAILED, seen=5, errored=5, throttled=1)
    SweepChunk.objects.create(run=run, seq=2, first_key="k2", last_key="k2z", size=5)  # pending
    SweepRun.objects.filter(pk=run.pk).update(courses_seen=999, chunks_done=0, chunks_total=0)
    with transaction.atomic():
        sweeps._reconcile(run.pk)
    run.refresh_from_db()
    counters = sweeps.run_counters(run)
    assert counters["seen"] == 10 and counters["updated"] == 2 and counters["errored"] == 5
    assert counters["catalog_requests"] == 3 and counters["throttled"] == 1 and counters["retries"] == 0
    assert (run.chunks_done, run.chunks_failed, run.chunks_total) == (2, 1, 3)


def test_reconcile_of_a_run_without_chunks_is_all_zeros():
    run = sweeps.start_sweep("command")
    SweepRun.objects.filter(pk=run.pk).update(courses_seen=7)
    with transaction.atomic():
        sweeps._reconcile(run.pk)
    run.refresh_from_db()
    assert set(sweeps.run_counters(run).values()) == {0}
    assert (run.chunks_done, run.chunks_failed, run.chunks_total) == (0, 0, 0)


def test_the_counters_line_names_every_counter_and_zero_for_the_missing():
    line = sweeps.counters_line({"seen": 3})
    assert line == " ".join(f"{name}={3 if name == 'seen' else 0}" for name in SWEEP_COUNTERS)


def test_a_failed_attempt_is_a_heartbeat_and_counts_only_what_it_spent():
    run = _running()
    chunk = run.chunks.first()
    SweepRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - LONG_AGO)
    sweeps.record_attempt(run.pk, chunk.pk, requests=2)
    chunk.refresh_from_db()
    run.refresh_from_db()
    assert (chunk.catalog_requests, chunk.throttled, chunk.retries) == (2, 0, 0)
    assert timezone.now() - run.heartbeat_at < timedelta(minutes=1)
    sweeps.record_attempt(run.pk, chunk.pk, requests=1, throttled=1, retried=True)
    chunk.refresh_from_db()
    assert (chunk.catalog_requests, chunk.throttled, chunk.retries) == (3, 1, 1)


# -- the in-process sweep and its dry run count what they spent -------------------------------


def test_an_in_process_sweep_counts_a_429_on_its_chunk_and_its_run(wire, catalog_client):
    rows = CourseOverviewFactory.create_batch(4)
    wire.add(*(catalog_run(str(ov.id)) for ov in rows))
    _throttled_once(wire)
    run = sweeps.start_sweep("command", page_size=2, in_process=True)
    slept, seen = [], []
    done = sweeps.run_in_process(
        run,
        catalog_client,
        policy=in_process_policy(3),
        sleep=slept.append,
        on_chunk=lambda chunk, counters: seen.append((chunk.seq, counters.seen)),
    )
    assert done.status == SweepStatus.COMPLETE and slept and slept[0] >= 1  # Retry-After as a floor
    assert seen == [(0, 2), (1, 2)]
    first = done.chunks.get(seq=0)
    assert (first.throttled, first.retries) == (1, 1)
    assert (done.throttled, done.retries, done.courses_seen) == (1, 1, 4)
    assert done.catalog_requests == 1 + wire.list_requests  # the token, and every list request


def test_a_dry_run_counts_what_a_sweep_would_and_numbers_its_chunks_in_order(wire, catalog_client):
    rows = CourseOverviewFactory.create_batch(45)  # page size 1: three planning batches
    wire.add(*(catalog_run(str(ov.id), marketing_url="https://new.example/x") for ov in rows))
    _throttled_once(wire)
    seqs = []
    result = sweeps.dry_run(
        catalog_client,
        page_size=1,
        policy=in_process_policy(3),
        sleep=lambda seconds: None,
        on_chunk=lambda chunk, counters: seqs.append(chunk.seq),
    )
    assert result.completed and result.chunks_done == 45 and seqs == list(range(45))
    counters = result.counters
    assert (counters["throttled"], counters["retries"], counters["seen"]) == (1, 1, 45)
    assert counters["updated"] == 45 and counters["catalog_requests"] == 1 + wire.list_requests
    assert not SweepRun.objects.exists()  # a preview leaves no run behind


def test_a_dry_run_whose_chunk_keeps_failing_counts_its_courses_errored(wire, catalog_client):
    rows = CourseOverviewFactory.create_batch(3)
    wire.add(*(catalog_run(str(ov.id)) for ov in rows))
    wire.before_list = lambda w: semantics.throttled(1)
    result = sweeps.dry_run(
        catalog_client, page_size=5, policy=in_process_policy(2), sleep=lambda seconds: None
    )
    assert not result.completed and result.chunks_done == 1 and "failed after 2 attempt(s)" in result.error
    counters = result.counters
    assert (counters["errored"], counters["throttled"], counters["retries"]) == (3, 2, 1)
    assert counters["catalog_requests"] == 1 + wire.list_requests == 3


def _chunks_counted(outcome: str) -> float:
    """``catalog_sync_sweep_chunks_total{outcome=...}`` as /metrics reports it."""
    for family in text_string_to_metric_families(api_metrics.exposition()[0].decode()):
        for sample in family.samples:
            if sample.name == "catalog_sync_sweep_chunks_total" and sample.labels == {"outcome": outcome}:
                return sample.value
    return 0.0


def test_finishing_a_chunk_stamps_it_counts_it_once_and_keeps_2000_characters_of_an_error():
    run = _running()
    first, second = run.chunks.order_by("seq")
    done_before, failed_before = _chunks_counted("done"), _chunks_counted("failed")
    outcome = sweeps.ChunkOutcome(SyncCounters(seen=5, updated=5), 1)
    assert sweeps.finish_chunk(run.pk, first.pk, outcome) is True
    failure = sweeps.ChunkOutcome(SyncCounters(), 2, error="E" * 5000)
    assert sweeps.finish_chunk(run.pk, second.pk, failure, may_complete=False) is True
    assert sweeps.finish_chunk(run.pk, first.pk, outcome) is False  # a duplicate is dropped
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == (ChunkStatus.DONE, ChunkStatus.FAILED)
    for chunk in (first, second):
        assert chunk.finished_at is not None and timezone.now() - chunk.finished_at < timedelta(minutes=1)
    assert first.error == "" and second.error == "E" * 2000 and second.errored == second.size
    assert (_chunks_counted("done"), _chunks_counted("failed")) == (done_before + 1, failed_before + 1)
    run.refresh_from_db()
    # the duplicate's result was dropped, its request still counted: 1 + 2 + 1
    assert (run.chunks_done, run.chunks_failed, run.courses_seen, run.catalog_requests) == (2, 1, 5, 4)


def test_a_completed_run_logs_its_outcome_and_counters_once_committed(
    django_capture_on_commit_callbacks, caplog
):
    run = _running()
    SweepRun.objects.filter(pk=run.pk).update(planning_done=True, chunks_total=2)
    caplog.set_level("INFO", logger="catalog.sweep")
    with django_capture_on_commit_callbacks(execute=True):
        for chunk in run.chunks.order_by("seq"):
            sweeps.finish_chunk(run.pk, chunk.pk, sweeps.ChunkOutcome(SyncCounters(seen=5, unchanged=5), 1))
    run.refresh_from_db()
    assert run.status == SweepStatus.COMPLETE and run.finished_at is not None
    finished = [r.getMessage() for r in caplog.records if "complete:" in r.getMessage()]
    assert len(finished) == 1 and finished[0].startswith(
        f"catalog sweep: sweep #{run.pk} complete: {sweeps.counters_line(sweeps.run_counters(run))}"
        " chunks=2 failed_chunks=0 strategy=keys "
    )
    assert "seen=10" in finished[0] and "catalog_requests=2" in finished[0]


def test_an_in_process_chunk_that_keeps_failing_records_its_cost_and_spares_fresher_rows(
    wire, catalog_client
):
    rows = CourseOverviewFactory.create_batch(3, catalog_status="ok")
    wire.add(*(catalog_run(str(ov.id)) for ov in rows))
    wire.before_list = lambda w: semantics.throttled(1)
    run = sweeps.start_sweep("command", page_size=5, in_process=True)

    def meanwhile(seconds):  # while the chunk waits, a per-course fetch checks one of its courses
        CourseOverview.objects.filter(pk=rows[0].pk).update(catalog_checked_at=timezone.now())

    done = sweeps.run_in_process(run, catalog_client, policy=in_process_policy(2), sleep=meanwhile)
    assert done.status == SweepStatus.FAILED and done.error.startswith("chunk 0 (")
    chunk = done.chunks.get()
    assert (chunk.status, chunk.throttled, chunk.retries, chunk.errored) == (ChunkStatus.FAILED, 2, 1, 3)
    assert (done.throttled, done.retries, done.courses_errored) == (2, 1, 3)
    statuses = dict(CourseOverview.objects.values_list("pk", "catalog_status"))
    # the row checked after the failed fetch started is fresher than the failure: it keeps its status
    assert statuses[rows[0].pk] == "ok"
    assert statuses[rows[1].pk] == statuses[rows[2].pk] == "error"


def test_a_run_completes_when_its_own_chunks_are_done_whatever_other_runs_hold():
    run = _running()
    old = _old_run(run.owner)  # a pending chunk of another run must not hold this one back
    SweepRun.objects.filter(pk=run.pk).update(planning_done=True)
    run.chunks.update(status=ChunkStatus.DONE)
    assert sweeps.complete_if_done(run.pk) is True
    assert SweepRun.objects.get(pk=run.pk).status == SweepStatus.COMPLETE
    # a run that is no longer running is never completed (again)
    old.chunks.update(status=ChunkStatus.DONE)
    SweepRun.objects.filter(pk=old.pk).update(planning_done=True)
    assert sweeps.complete_if_done(old.pk) is False
    assert SweepRun.objects.get(pk=old.pk).status == SweepStatus.FAILED


def test_a_failed_chunk_records_the_failure_on_its_own_courses_only():
    keys = ["course-v1:Z+Z0+B", "course-v1:Z+Z0+C", "course-v1:Z+Z9+B"]  # the last is outside chunk 0
    for key in keys:
        CourseOverviewFactory(id=key, catalog_status="ok")
    run = _running()
    chunk = run.chunks.get(seq=0)
    failure = sweeps.ChunkOutcome(SyncCounters(), 1, throttled=1, error="CatalogServerError: 503")
    sweeps.finish_chunk(run.pk, chunk.pk, failure, may_complete=False)
    statuses = dict(CourseOverview.objects.values_list("id", "catalog_status"))
    assert [statuses[CourseOverview._meta.pk.to_python(k)] for k in keys] == ["error", "error", "ok"]
    # the same result again: dropped, its cost (a 429 among it) counted, no retry spent
    assert sweeps.finish_chunk(run.pk, chunk.pk, failure) is False
    chunk.refresh_from_db()
    assert (chunk.catalog_requests, chunk.throttled, chunk.retries) == (2, 2, 0)


def test_planning_is_a_heartbeat_and_only_the_owner_of_a_running_run_plans():
    CourseOverviewFactory.create_batch(3)
    run = sweeps.start_sweep("command", page_size=2, owner="me")
    SweepRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - LONG_AGO)
    planned = [chunk for batch in sweeps.plan_chunks(run) for chunk in batch]
    assert [c.size for c in planned] == [2, 1]
    assert timezone.now() - _beat(run) < timedelta(minutes=1)

    other = sweeps.start_sweep("beat", page_size=2)  # refused: "me" is running it
    assert other is None
    stranger = SweepRun.objects.get(pk=run.pk)
    stranger.owner, stranger.planning_done = "someone else", False
    with pytest.raises(sweeps.SweepTakenOver, match=f"sweep #{run.pk} is no longer this process's"):
        next(sweeps.plan_chunks(stranger))
    SweepRun.objects.filter(pk=run.pk).update(status=SweepStatus.FAILED)
    stopped = SweepRun.objects.get(pk=run.pk)
    stopped.planning_done = False
    with pytest.raises(sweeps.SweepTakenOver):
        next(sweeps.plan_chunks(stopped))


def test_an_in_process_sweep_that_ends_with_chunks_pending_is_stopped_not_left_running(wire, catalog_client):
    rows = CourseOverviewFactory.create_batch(2)
    wire.add(*(catalog_run(str(ov.id)) for ov in rows))
    run = sweeps.start_sweep("command", page_size=1, in_process=True)

    def add_a_chunk_behind(chunk, counters):  # after the first of two chunks
        if chunk.seq == 0:
            SweepChunk.objects.create(
                run=run, seq=99, first_key="course-v1:Y+Y+Y", last_key="course-v1:Y+Y+Z", size=1
            )

    done = sweeps.run_in_process(
        run, catalog_client, policy=in_process_policy(2), sleep=lambda s: None, on_chunk=add_a_chunk_behind
    )
    assert done.status == SweepStatus.FAILED
    assert done.error == "the in-process sweep ended with chunks still pending"
    assert done.chunks.get(seq=99).status == ChunkStatus.CANCELLED


def test_a_new_run_records_its_trigger_and_whether_it_runs_in_process():
    run = sweeps.start_sweep("beat")
    assert (run.trigger, run.in_process, run.resumed) == ("beat", False, 0)
    sweeps.stop_run(run, "done with it")
    inline = sweeps.start_sweep("command", in_process=True)
    assert (inline.trigger, inline.in_process) == ("command", True)


def test_a_redelivered_coordinator_resumes_its_own_run_at_once_with_a_fresh_heartbeat():
    run = _running(owner="task-1")
    SweepRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=5))
    again = sweeps.start_sweep("beat", owner="task-1")  # not stale, but its own: taken back now
    assert again.pk == run.pk and again.resumed == 1
    assert timezone.now() - again.heartbeat_at < timedelta(seconds=4)


def test_an_in_process_sweep_over_a_source_without_a_429_counter_counts_no_429s():
    from tests.test_sync_edges import _BareSource

    rows = CourseOverviewFactory.create_batch(3)
    source = _BareSource({str(ov.id): catalog_run(str(ov.id)) for ov in rows})
    run = sweeps.start_sweep("command", page_size=2, in_process=True)
    done = sweeps.run_in_process(run, source, policy=in_process_policy(2), sleep=lambda s: None)
    assert done.status == SweepStatus.COMPLETE
    assert (done.throttled, done.catalog_requests, done.courses_seen) == (0, 2, 3)
    result = sweeps.dry_run(source, page_size=2, policy=in_process_policy(2), sleep=lambda s: None)
    assert (result.counters["throttled"], result.counters["catalog_requests"]) == (0, 2)


def test_a_dry_run_stopped_by_its_last_chunk_counts_every_chunk_it_did(wire, catalog_client):
    rows = CourseOverviewFactory.create_batch(3)
    wire.add(*(catalog_run(str(ov.id)) for ov in rows))
    wire.before_list = lambda w: semantics.server_error() if w.list_requests >= 3 else None
    result = sweeps.dry_run(catalog_client, page_size=1, policy=in_process_policy(2), sleep=lambda s: None)
    assert not result.completed and result.chunks_done == 3  # two done, then the failed one
    assert (result.counters["seen"], result.counters["errored"]) == (2, 1)
