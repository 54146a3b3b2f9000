"""Publish receivers, coalescing and the per-course task, called directly (no eager mode)."""

from __future__ import annotations

from unittest import mock

import pytest
import responses
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from opaque_keys.edx.keys import CourseKey
from waffle.testutils import override_switch

from catalog import coalesce
from catalog.errors import CatalogServerError
from catalog.switches import DISABLE_CATALOG_CALLS, FETCH_ON_CREATE
from overviews.models import CatalogStatus, CourseOverview
from signals import course_published
from tasks import refresh as refresh_tasks
from tests.factories import CourseOverviewFactory, catalog_run
from tests.wire import WireCatalog

pytestmark = pytest.mark.django_db
KEY = "course-v1:PubX+P101+2025"


@pytest.fixture
def wire(catalog_settings):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield WireCatalog(rsps)


@pytest.fixture
def scheduled():
    with mock.patch.object(refresh_tasks.refresh_course, "apply_async") as apply_async:
        yield apply_async


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
    assert len(queries.captured_queries) <= 8


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
    assert client.tokens_fetched == 1 and client.requests_made == 3
    conn._shared.clear()
