"""Publish receivers, coalescing and the per-course task, called directly (no eager mode)."""

from __future__ import annotations

import logging
from datetime import timedelta
from unittest import mock

import pytest
import responses
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError
from opaque_keys.edx.keys import CourseKey
from waffle.testutils import override_switch

import celeryconfig as conf
from catalog import coalesce
from catalog.models import CatalogIntegration
from catalog.switches import DISABLE_CATALOG_CALLS, FETCH_ON_CREATE
from catalog_client.errors import CatalogServerError
from overviews.models import CatalogStatus, CourseOverview
from signals import course_published
from tasks import refresh as refresh_tasks
from tests.factories import CourseOverviewFactory, catalog_run
from tests.wire import WireCatalog

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker_presumed_up")]
KEY = "course-v1:PubX+P101+2025"


@pytest.fixture
def wire(catalog_settings):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield WireCatalog(rsps)


@pytest.fixture
def scheduled(queued):
    """What a publish queued (tests/conftest.py's ``queued``); the task never runs here."""
    return queued


def publish(key=KEY, **content):
    course_published.send(sender=None, course_key=CourseKey.from_string(key), **content)


def test_publish_updates_in_place_and_keeps_catalog_fields(scheduled, django_capture_on_commit_callbacks):
    CourseOverviewFactory(
        id=CourseKey.from_string(KEY),
        display_name="old",
        marketing_url="https://keep.example/x",
        catalog_status=CatalogStatus.OK,
    )
    with django_capture_on_commit_callbacks(execute=True):
        publish(display_name="new", marketing_url="https://ignored.example/")
    row = CourseOverview.objects.get(id=KEY)
    assert (row.display_name, row.marketing_url, row.catalog_status) == (
        "new",
        "https://keep.example/x",
        "ok",
    )
    scheduled.assert_called_once()


def test_publish_of_an_unknown_course_creates_its_row(scheduled, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        publish(display_name="brand new")
    assert CourseOverview.objects.get(id=KEY).display_name == "brand new"


def test_the_task_is_enqueued_only_after_the_commit(scheduled, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks, transaction.atomic():
        publish()
        assert not scheduled.called
    assert len(callbacks) == 1
    callbacks[0]()
    assert scheduled.call_args.args[0] == (KEY,)


def test_the_receiver_does_no_network_io_and_few_queries(scheduled, django_capture_on_commit_callbacks):
    with (
        responses.RequestsMock() as rsps,
        CaptureQueriesContext(connection) as queries,
        django_capture_on_commit_callbacks(execute=True),
    ):
        publish(display_name="x")
        assert len(rsps.calls) == 0  # any HTTP request would fail: nothing is registered
    # the write, and the first reads of the switches and the configuration (cached after that)
    assert len(queries.captured_queries) <= 9
    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
        publish(display_name="y")
    writes = [q for q in queries.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    assert len(writes) <= 2, [q["sql"][:60] for q in writes]  # the row's read and write: nothing else


def test_a_burst_of_publishes_schedules_one_fetch(scheduled, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(50):
            publish()
    assert scheduled.call_count == 1
    assert scheduled.call_args.kwargs["countdown"] > 0


def test_a_publish_during_a_running_fetch_schedules_exactly_one_more(scheduled, wire):
    wire.add(catalog_run(KEY))
    CourseOverviewFactory(id=CourseKey.from_string(KEY))
    assert refresh_tasks.enqueue_refresh(KEY) is True
    assert refresh_tasks.enqueue_refresh(KEY) is False  # coalesced into the pending one

    original = refresh_tasks.refresh_courses

    def publish_while_running(keys, client, **kw):
        assert refresh_tasks.enqueue_refresh(KEY) is True  # pending was cleared when the fetch began
        assert refresh_tasks.enqueue_refresh(KEY) is False
        return original(keys, client, **kw)

    with mock.patch.object(refresh_tasks, "refresh_courses", publish_while_running):
        assert refresh_tasks.refresh_course(KEY) == "ok"
    assert scheduled.call_count == 2


def test_a_task_finding_the_course_locked_defers_instead_of_fetching(scheduled, wire):
    CourseOverviewFactory(id=CourseKey.from_string(KEY))
    token = coalesce.acquire_running(KEY, ttl=60)
    assert refresh_tasks.refresh_course(KEY) == "deferred"
    assert wire.list_requests == 0 and scheduled.call_count == 1
    coalesce.release_running(KEY, token)
    wire.add(catalog_run(KEY))
    assert refresh_tasks.refresh_course(KEY) == "ok"


def test_task_syncs_the_course_and_is_idempotent(wire):
    wire.add(catalog_run(KEY, marketing_url="https://t.example/x"))
    CourseOverviewFactory(id=CourseKey.from_string(KEY))
    assert refresh_tasks.refresh_course(KEY) == "ok"
    assert refresh_tasks.refresh_course(KEY) == "ok"
    row = CourseOverview.objects.get(id=KEY)
    assert (row.marketing_url, row.catalog_status) == ("https://t.example/x", CatalogStatus.OK)


def test_task_for_a_ccx_course_takes_the_master(wire):
    wire.add(catalog_run(KEY, marketing_url="https://master.example/x"))
    ccx = f"ccx-v1:{KEY.split(':', 1)[1]}+ccx@3"
    CourseOverviewFactory(id=CourseKey.from_string(ccx))
    assert refresh_tasks.refresh_course(ccx) == "ok"
    assert CourseOverview.objects.get(id=ccx).marketing_url == "https://master.example/x"


def test_task_retries_a_retryable_error_and_keeps_the_data(wire):
    CourseOverviewFactory(id=CourseKey.from_string(KEY), marketing_url="https://keep.example/x")
    wire.before_list = lambda w: (503, {}, "down")
    # called directly, Task.retry re-raises the error instead of sending a message
    with pytest.raises(CatalogServerError):
        refresh_tasks.refresh_course(KEY)
    assert CourseOverview.objects.get(id=KEY).marketing_url == "https://keep.example/x"


def test_task_records_a_permanent_error_without_retrying(wire):
    CourseOverviewFactory(id=CourseKey.from_string(KEY), marketing_url="https://keep.example/x")
    wire.before_list = lambda w: (403, {}, '{"detail": "You do not have permission."}')
    assert refresh_tasks.refresh_course(KEY) == "error"
    row = CourseOverview.objects.get(id=KEY)
    assert row.catalog_status == CatalogStatus.ERROR and "403" in row.catalog_error
    assert row.marketing_url == "https://keep.example/x"


def test_task_with_an_invalid_or_vanished_key_is_a_logged_no_op(wire):
    assert refresh_tasks.refresh_course("not a key") == "invalid"
    assert refresh_tasks.refresh_course(KEY) == "no-overview"


@override_switch(DISABLE_CATALOG_CALLS, active=True)
def test_kill_switch_publish_still_updates_content_but_no_fetch_is_scheduled(
    scheduled, wire, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        publish(display_name="content only")
    assert CourseOverview.objects.get(id=KEY).display_name == "content only"
    assert not scheduled.called
    assert refresh_tasks.refresh_course(KEY) == "disabled"
    assert wire.list_requests == 0


def test_integration_disabled_in_the_admin_publish_updates_content_and_queues_nothing(
    scheduled, wire, django_capture_on_commit_callbacks
):
    """The receiver asks the one place that decides whether catalog calls are allowed
    (``why_calls_are_off``): the admin's ``enabled`` stops the fetch as the kill switch does."""
    CatalogIntegration.objects.create(enabled=False)
    with django_capture_on_commit_callbacks(execute=True):
        publish(display_name="content only")
    row = CourseOverview.objects.get(id=KEY)
    assert row.display_name == "content only" and row.catalog_refresh_requested_at is not None
    assert not scheduled.called
    CatalogIntegration.objects.create(enabled=True)
    with django_capture_on_commit_callbacks(execute=True):
        publish(display_name="again")
    assert scheduled.call_count == 1  # back on: the publish queues its fetch


@override_switch(DISABLE_CATALOG_CALLS, active=False)
@override_switch(FETCH_ON_CREATE, active=True)
def test_fetch_on_create_syncs_a_new_row_in_process(scheduled, wire, django_capture_on_commit_callbacks):
    wire.add(catalog_run(KEY, marketing_url="https://now.example/x"))
    with django_capture_on_commit_callbacks(execute=True):
        publish()
    assert CourseOverview.objects.get(id=KEY).marketing_url == "https://now.example/x"
    assert not scheduled.called


@override_switch(FETCH_ON_CREATE, active=True)
def test_fetch_on_create_falls_back_to_the_task_on_failure(
    scheduled, wire, django_capture_on_commit_callbacks
):
    wire.before_list = lambda w: (500, {}, "boom")
    with django_capture_on_commit_callbacks(execute=True):
        publish()
    assert CourseOverview.objects.filter(id=KEY).exists()
    scheduled.assert_called_once()


@override_switch(FETCH_ON_CREATE, active=True)
def test_fetch_on_create_does_not_fetch_for_an_existing_row(
    scheduled, wire, django_capture_on_commit_callbacks
):
    CourseOverviewFactory(id=CourseKey.from_string(KEY))
    with django_capture_on_commit_callbacks(execute=True):
        publish()
    assert wire.list_requests == 0
    scheduled.assert_called_once()


def test_a_redelivered_message_takes_over_the_lock_its_dead_execution_held():
    assert coalesce.acquire_running(KEY, ttl=60, owner="task-1") == "task-1"
    assert coalesce.acquire_running(KEY, ttl=60, owner="task-2") is None  # another message waits
    assert coalesce.acquire_running(KEY, ttl=60, owner="task-1") == "task-1"  # the same one, redelivered


def test_consecutive_tasks_in_one_process_reuse_one_token(wire):
    """The worker keeps its client between tasks: one token for many fetches, not one each."""
    from catalog import connection as conn

    conn._shared.clear()
    for i in range(3):
        key = f"course-v1:PubX+P10{i}+2025"
        wire.add(catalog_run(key))
        CourseOverviewFactory(id=CourseKey.from_string(key))
        assert refresh_tasks.refresh_course(key) == "ok"
    (client,) = conn._shared.values()
    assert client.tokens_fetched == 1 and client.requests_made == 4  # one token, three fetches
    conn._shared.clear()


# --- The outbox: the row records the request; the task clears it when its fetch completes ------

BROKER_DOWN = BrokerError("Error 111 connecting to 127.0.0.1:6391. Connection refused.")
OTHER = "course-v1:PubX+P102+2025"


def marker(key=KEY):
    return CourseOverview.objects.get(id=key).catalog_refresh_requested_at


def overdue():
    """A marker the requeue must pick up (older than the coalescing window plus its interval)."""
    return timezone.now() - timedelta(
        seconds=conf.PUBLISH_COALESCE_WINDOW + conf.REFRESH_REQUEUE_INTERVAL + 5
    )


def test_a_publish_records_its_fetch_in_the_same_write_as_the_content(
    scheduled, django_capture_on_commit_callbacks
):
    CourseOverviewFactory(id=CourseKey.from_string(KEY), display_name="old")
    before = timezone.now()
    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
        publish(display_name="new")
    writes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith(("UPDATE", "INSERT"))]
    assert len(writes) == 1 and "catalog_refresh_requested_at" in writes[0] and "display_name" in writes[0]
    assert marker() >= before
    scheduled.assert_called_once()


def test_broker_down_at_publish_content_lands_marker_stays_one_warning(
    caplog, django_capture_on_commit_callbacks
):
    CourseOverviewFactory(id=CourseKey.from_string(KEY))
    with (
        mock.patch.object(
            refresh_tasks.refresh_course, "apply_async", side_effect=BROKER_DOWN
        ) as apply_async,
        caplog.at_level(logging.INFO),
        django_capture_on_commit_callbacks(execute=True),
    ):
        publish(display_name="during the outage")  # does not raise into the publisher
        publish(key=OTHER, display_name="also during")
    assert CourseOverview.objects.get(id=KEY).display_name == "during the outage"
    assert marker() is not None and marker(OTHER) is not None
    assert apply_async.call_count == 1  # the second publish did not wait on a broker known down
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].exc_info is None
    assert "broker unavailable" in warnings[0].getMessage() and KEY in warnings[0].getMessage()
    # nothing holds the `pending` hint: once the broker is back, the next request queues at once
    refresh_tasks._broker_down_until = 0.0
    with mock.patch.object(refresh_tasks.refresh_course, "apply_async") as apply_async:
        assert refresh_tasks.enqueue_refresh(KEY) is True


def test_request_refresh_sorts_every_key_and_records_them_in_one_update(scheduled):
    a, b = CourseOverviewFactory(), CourseOverviewFactory()
    assert coalesce.claim_pending(str(b.id), ttl=60)  # a fetch of b is already scheduled
    unknown = CourseKey.from_string("course-v1:No+Such+Course")
    with CaptureQueriesContext(connection) as queries:
        request = refresh_tasks.request_refresh([a.id, b.id, unknown, a.id])
    assert (request.queued, request.coalesced, request.unknown, request.deferred) == (
        [a.id],
        [b.id],
        [unknown],
        [],
    )
    assert set(request.task_ids) == {a.id}
    assert len([q for q in queries.captured_queries if q["sql"].startswith("UPDATE")]) == 1
    assert marker(a.id) is not None and marker(b.id) is not None
    assert scheduled.call_args.args[0] == (str(a.id),) and scheduled.call_count == 1
    assert not scheduled.call_args.kwargs.get("countdown")  # an ops refresh runs now


def test_500_refresh_requests_for_one_course_queue_one_task(scheduled):
    ov = CourseOverviewFactory()
    results = [refresh_tasks.request_refresh([ov.id]) for _ in range(500)]
    assert scheduled.call_count == 1
    assert results[0].queued == [ov.id] and all(r.coalesced == [ov.id] for r in results[1:])


def test_request_refresh_with_the_broker_down_records_and_defers():
    a, b = CourseOverviewFactory(), CourseOverviewFactory()
    with mock.patch.object(
        refresh_tasks.refresh_course, "apply_async", side_effect=BROKER_DOWN
    ) as apply_async:
        request = refresh_tasks.request_refresh([a.id, b.id])
    assert (
        request.deferred == [a.id, b.id]
        and not request.queued
        and "Connection refused" in request.broker_error
    )
    assert apply_async.call_count == 1
    assert marker(a.id) is not None and marker(b.id) is not None
    assert coalesce.claim_pending(str(a.id), ttl=60)  # released: the requeue can claim it


def test_the_task_clears_the_marker_when_its_fetch_completes(wire):
    wire.add(catalog_run(KEY))
    CourseOverviewFactory(id=CourseKey.from_string(KEY), catalog_refresh_requested_at=timezone.now())
    assert refresh_tasks.refresh_course(KEY) == "ok"
    assert marker() is None


def test_a_request_made_during_the_fetch_keeps_its_marker(scheduled, wire):
    wire.add(catalog_run(KEY))
    CourseOverviewFactory(id=CourseKey.from_string(KEY), catalog_refresh_requested_at=overdue())
    original = refresh_tasks.refresh_courses

    def publish_during_the_fetch(keys, client, **kw):
        outcome = original(keys, client, **kw)
        publish(display_name="published mid-fetch")
        return outcome

    with mock.patch.object(refresh_tasks, "refresh_courses", publish_during_the_fetch):
        assert refresh_tasks.refresh_course(KEY) == "ok"
    assert marker() is not None  # that publish still needs a fetch after it


def test_a_permanent_error_clears_the_marker_and_is_recorded(wire):
    CourseOverviewFactory(id=CourseKey.from_string(KEY), catalog_refresh_requested_at=timezone.now())
    wire.before_list = lambda w: (403, {}, '{"detail": "You do not have permission."}')
    assert refresh_tasks.refresh_course(KEY) == "error"
    assert marker() is None and CourseOverview.objects.get(id=KEY).catalog_status == CatalogStatus.ERROR


def test_a_retry_keeps_the_marker_and_holds_pending_for_the_wait(wire):
    CourseOverviewFactory(id=CourseKey.from_string(KEY), catalog_refresh_requested_at=timezone.now())
    wire.before_list = lambda w: (503, {}, "down")
    with pytest.raises(CatalogServerError):
        refresh_tasks.refresh_course(KEY)
    assert marker() is not None
    assert not coalesce.claim_pending(KEY, ttl=60)  # requests during the backoff coalesce into the retry


@override_switch(DISABLE_CATALOG_CALLS, active=True)
def test_with_calls_off_the_task_keeps_the_marker_and_the_requeue_waits(scheduled, wire):
    CourseOverviewFactory(id=CourseKey.from_string(KEY), catalog_refresh_requested_at=overdue())
    assert refresh_tasks.refresh_course(KEY) == "disabled"
    assert marker() is not None
    assert refresh_tasks.requeue_refreshes() == "disabled" and not scheduled.called


def test_requeue_queues_overdue_markers_once_and_leaves_the_rest(scheduled):
    old = CourseOverviewFactory(catalog_refresh_requested_at=overdue())
    CourseOverviewFactory(catalog_refresh_requested_at=timezone.now() - timedelta(seconds=1))  # young
    CourseOverviewFactory(catalog_refresh_requested_at=None)  # cleared
    busy = CourseOverviewFactory(catalog_refresh_requested_at=overdue())
    coalesce.acquire_running(str(busy.id), ttl=60)  # its fetch is running: it will clear the marker

    assert refresh_tasks.requeue_refreshes() == "queued 1, already pending 1"
    assert [c.args[0] for c in scheduled.call_args_list] == [(str(old.id),)]
    assert refresh_tasks.requeue_refreshes() == "queued 0, already pending 2"  # pending now: once
    assert scheduled.call_count == 1


def test_requeue_reads_in_batches_and_queues_a_bounded_number_per_tick(scheduled):
    rows = [CourseOverviewFactory(catalog_refresh_requested_at=overdue()) for _ in range(7)]
    with (
        mock.patch.object(refresh_tasks, "REQUEUE_BATCH", 3),
        mock.patch.object(refresh_tasks, "REQUEUE_PER_TICK", 5),
    ):
        assert refresh_tasks.requeue_refreshes() == "queued 5, already pending 0"
        assert refresh_tasks.requeue_refreshes() == "queued 2, already pending 5"
    queued = [c.args[0][0] for c in scheduled.call_args_list]
    assert sorted(queued) == sorted(str(r.id) for r in rows)  # each exactly once


def test_requeue_stops_at_a_broker_that_is_down_and_keeps_every_marker():
    a, b = (CourseOverviewFactory(catalog_refresh_requested_at=overdue()) for _ in range(2))
    with mock.patch.object(
        refresh_tasks.refresh_course, "apply_async", side_effect=BROKER_DOWN
    ) as apply_async:
        assert refresh_tasks.requeue_refreshes().startswith("broker unavailable")
    assert apply_async.call_count == 1
    assert marker(a.id) is not None and marker(b.id) is not None


def test_beat_installs_the_requeue_in_its_database_schedule(monkeypatch):
    from django_celery_beat import schedulers
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import DatabaseScheduler

    from tasks.app import app

    # The scheduler calls close_old_connections(), which closes a connection that is inside a
    # transaction (the test's): on PostgreSQL that ends the test's connection. Beat has none.
    monkeypatch.setattr(schedulers, "close_old_connections", lambda: None)

    DatabaseScheduler(app=app, lazy=True).update_from_dict(app.conf.beat_schedule)  # what beat does
    task = PeriodicTask.objects.get(task=refresh_tasks.requeue_refreshes.name)
    assert task.enabled and task.queue == conf.MAINTENANCE_QUEUE  # not behind a refresh backlog
    assert task.interval.every == conf.REFRESH_REQUEUE_INTERVAL and task.interval.period == "seconds"
    assert 0 < task.expire_seconds <= conf.REFRESH_REQUEUE_INTERVAL  # missed ticks never pile up


# --- The running lock: compare-and-delete, on the test cache and on Redis ---------------------


@pytest.fixture(params=["locmem", "database", "redis"])
def any_cache(request, settings):
    if request.param == "locmem":
        yield "locmem"
        return
    if request.param == "database":  # the embedded default (its table comes with `migrate`)
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.db.DatabaseCache",
                "LOCATION": "catalog_sync_cache",
            }
        }
        yield "database"
        return
    import redis

    from tests.integration.harness import CACHE_DB, REDIS_URL

    url = f"{REDIS_URL}/{CACHE_DB}"
    try:
        redis.Redis.from_url(url).ping()
    except redis.RedisError:
        pytest.skip(f"no Redis at {url}")
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}}
    yield "redis"
    redis.Redis.from_url(url).flushdb()


def test_release_running_deletes_only_its_own_lock(any_cache):
    from django.core.cache import caches

    token = coalesce.acquire_running(KEY, ttl=60)
    coalesce.release_running(KEY, "someone-else")
    assert coalesce.acquire_running(KEY, ttl=60) is None  # still held
    if any_cache == "redis":  # one script, no get-then-delete from here
        with mock.patch.object(caches["default"], "get", side_effect=AssertionError("not atomic")):
            coalesce.release_running(KEY, token)
    else:
        coalesce.release_running(KEY, token)
    assert coalesce.running([KEY]) == set()
    assert coalesce.acquire_running(KEY, ttl=60, owner="task-1") == "task-1"
    assert coalesce.running([KEY, OTHER]) == {KEY}
    assert coalesce.acquire_running(KEY, ttl=60, owner="task-2") is None
    assert coalesce.acquire_running(KEY, ttl=60, owner="task-1") == "task-1"  # the same message, redelivered


# --- refresh_course: in process, a failure is recorded on the row; --async goes through request_refresh


def run_command(*args):
    import io

    from django.core.management import call_command

    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_refresh_course_that_fails_on_a_503_records_it_on_the_row_and_exits_1(wire):
    from django.core.management.base import CommandError

    CourseOverviewFactory(
        id=CourseKey.from_string(KEY),
        marketing_url="https://keep.example/x",
        catalog_status=CatalogStatus.OK,
        catalog_refresh_requested_at=overdue(),
    )
    wire.before_list = lambda w: (503, {}, "down")
    with pytest.raises(CommandError, match="catalog fetch failed") as info:
        run_command("refresh_course", KEY)
    assert info.value.returncode == 1
    row = CourseOverview.objects.get(id=KEY)
    assert row.catalog_status == CatalogStatus.ERROR and "503" in row.catalog_error
    assert row.catalog_attempted_at is not None and row.marketing_url == "https://keep.example/x"
    assert row.catalog_refresh_requested_at is not None  # not answered: a worker still owes it


def test_refresh_course_in_process_answers_the_requests_made_before_it(wire):
    wire.add(catalog_run(KEY))
    CourseOverviewFactory(id=CourseKey.from_string(KEY), catalog_refresh_requested_at=overdue())
    run_command("refresh_course", KEY)
    assert marker() is None


def test_refresh_course_async_says_queued_already_pending_or_unknown_per_key(scheduled):
    from django.core.management.base import CommandError

    a, b = CourseOverviewFactory(), CourseOverviewFactory()
    coalesce.claim_pending(str(b.id), ttl=60)
    with pytest.raises(CommandError) as info:
        run_command("refresh_course", "--async", str(a.id), str(b.id), "course-v1:No+Such+Course")
    assert info.value.returncode == 1
    out, _ = run_command("refresh_course", "--async", str(a.id), str(b.id))
    assert f"already pending {a.id}" in out and f"already pending {b.id}" in out
    assert scheduled.call_count == 1 and scheduled.call_args.args[0] == (str(a.id),)


def test_refresh_course_async_with_the_broker_down_exits_1_and_keeps_the_request():
    from django.core.management.base import CommandError

    ov = CourseOverviewFactory()
    with (
        mock.patch.object(refresh_tasks.refresh_course, "apply_async", side_effect=BROKER_DOWN),
        pytest.raises(CommandError, match="broker unavailable") as info,
    ):
        run_command("refresh_course", "--async", str(ov.id))
    assert info.value.returncode == 1 and marker(ov.id) is not None
