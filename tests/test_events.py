"""The event bus door: Studio's COURSE_CATALOG_INFO_CHANGED, sent in-process through openedx-events
(as the consumer emits it), its ordering by event time, the consumer's handling of undecodable
messages, and the new-course recheck policy (catalog.newcourse) as the per-course task uses it.

The consumer over a real Redis is in tests/integration/test_event_bus.py."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
import responses
from django.utils import timezone
from edx_event_bus_redis.internal.message import RedisMessage
from opaque_keys.edx.keys import CourseKey
from openedx_events.content_authoring.data import CourseCatalogData, CourseScheduleData
from openedx_events.content_authoring.signals import COURSE_CATALOG_INFO_CHANGED
from openedx_events.data import EventsMetadata
from waffle.testutils import override_switch

from catalog.newcourse import FIRST_RECHECK, MAX_RECHECK, recheck_delay
from catalog.switches import DISABLE_CATALOG_CALLS
from observability.metrics import EVENTS_CONSUMED
from overviews.models import CatalogStatus, CourseOverview
from signals import consumer as bus_consumer
from signals.events import catalog_info_changed, content_from_catalog_info
from tasks import refresh as refresh_tasks
from tests.factories import CourseOverviewFactory, catalog_run
from tests.wire import WireCatalog

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker_presumed_up")]
KEY = "course-v1:BusX+B101+2026"
T0 = datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def scheduled(queued):
    """What a publish queued (tests/conftest.py's ``queued``); the task never runs here."""
    return queued


@pytest.fixture
def wire(catalog_settings):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield WireCatalog(rsps)


def info(key=KEY, name="Bus course", pacing="self", hidden=False, invitation_only=False, **schedule):
    return CourseCatalogData(
        course_key=CourseKey.from_string(key),
        name=name,
        schedule_data=CourseScheduleData(
            start=schedule.pop("start", datetime(2026, 9, 1, tzinfo=UTC)), pacing=pacing, **schedule
        ),
        hidden=hidden,
        invitation_only=invitation_only,
    )


def send(catalog_info, time=T0):
    """As the consumer does: the openedx-events signal, with the event's own metadata time."""
    responses_ = COURSE_CATALOG_INFO_CHANGED.send_event(time=time, catalog_info=catalog_info)
    (outcome,) = [result for receiver, result in responses_ if receiver is catalog_info_changed]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def events_counted(outcome: str) -> float:
    return EVENTS_CONSUMED.labels(outcome=outcome)._value.get()


def test_an_event_renames_in_place_keeps_catalog_fields_and_enqueues_one_refresh(
    scheduled, django_capture_on_commit_callbacks
):
    CourseOverviewFactory(
        id=CourseKey.from_string(KEY),
        display_name="Old name",
        marketing_url="https://keep.example/x",
        language="fr",
        catalog_status=CatalogStatus.OK,
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert (
            send(info(name="New name", pacing="instructor", hidden=True, invitation_only=True)) == "applied"
        )
    row = CourseOverview.objects.get(id=KEY)
    assert (row.display_name, row.self_paced, row.hidden, row.invitation_only) == (
        "New name",
        False,
        True,
        True,
    )
    assert row.start == datetime(2026, 9, 1, tzinfo=UTC)
    assert (row.marketing_url, row.language, row.catalog_status) == ("https://keep.example/x", "fr", "ok")
    assert row.content_event_time == T0
    assert row.catalog_refresh_requested_at is not None  # the outbox marker, as for a publish
    assert scheduled.call_count == 1
    assert scheduled.call_args.args[0] == (KEY,)


def test_an_event_for_a_new_course_creates_it_with_the_key_parts(
    scheduled, django_capture_on_commit_callbacks
):
    end = datetime(2027, 1, 31, tzinfo=UTC)
    with django_capture_on_commit_callbacks(execute=True):
        assert send(info(name="Brand new", end=end, enrollment_end=end)) == "created"
    row = CourseOverview.objects.get(id=KEY)
    assert (row.org, row.number, row.run) == ("BusX", "B101", "2026")
    assert (row.display_name, row.self_paced, row.end, row.enrollment_end) == ("Brand new", True, end, end)
    assert row.catalog_status == CatalogStatus.NEVER
    assert scheduled.call_count == 1


def test_an_older_event_is_ignored_logged_and_counted(scheduled, django_capture_on_commit_callbacks, caplog):
    send(info(name="Newer"), time=T0)
    before = events_counted("ignored_stale")
    scheduled.reset_mock()
    with caplog.at_level(logging.INFO, "signals.events"), django_capture_on_commit_callbacks(execute=True):
        assert send(info(name="Older"), time=T0 - timedelta(seconds=1)) == "ignored_stale"
    assert CourseOverview.objects.get(id=KEY).display_name == "Newer"
    assert CourseOverview.objects.get(id=KEY).content_event_time == T0
    assert scheduled.call_count == 0
    assert events_counted("ignored_stale") == before + 1
    assert any("ignored (ignored_stale)" in r.getMessage() for r in caplog.records)


def test_replaying_a_stream_from_the_start_changes_nothing(scheduled, django_capture_on_commit_callbacks):
    stream = [(info(name=f"v{i}"), T0 + timedelta(minutes=i)) for i in range(4)]
    with django_capture_on_commit_callbacks(execute=True):
        assert [send(ci, t) for ci, t in stream] == ["created", "applied", "applied", "applied"]
    state = CourseOverview.objects.values().get(id=KEY)
    scheduled.reset_mock()
    with django_capture_on_commit_callbacks(execute=True):
        outcomes = [send(ci, t) for ci, t in stream]
    assert outcomes == ["ignored_stale"] * 3 + ["ignored_duplicate"]
    assert CourseOverview.objects.values().get(id=KEY) == state  # not even `modified` moved
    assert scheduled.call_count == 0


def test_a_late_event_still_applies_over_content_no_event_wrote(
    scheduled, django_capture_on_commit_callbacks
):
    CourseOverviewFactory(id=CourseKey.from_string(KEY), display_name="Imported")
    with django_capture_on_commit_callbacks(execute=True):
        assert send(info(name="From Studio"), time=T0 - timedelta(days=30)) == "applied"
    assert CourseOverview.objects.get(id=KEY).display_name == "From Studio"


@override_switch(DISABLE_CATALOG_CALLS, active=True)
def test_kill_switch_event_writes_content_but_queues_no_fetch(scheduled, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        assert send(info(name="Under the switch")) == "created"
    row = CourseOverview.objects.get(id=KEY)
    assert row.display_name == "Under the switch" and row.catalog_refresh_requested_at is not None
    assert scheduled.call_count == 0


def test_an_unknown_pacing_leaves_self_paced_as_stored(caplog):
    content = content_from_catalog_info(info(pacing="lunar"))
    assert "self_paced" not in content
    assert content_from_catalog_info(info(pacing="instructor"))["self_paced"] is False


def test_two_doors_one_core(scheduled, django_capture_on_commit_callbacks):
    """course_published and the event reach the same write: the same coalesced refresh, once."""
    from signals import course_published

    with django_capture_on_commit_callbacks(execute=True):
        course_published.send(sender=None, course_key=CourseKey.from_string(KEY), display_name="From LMS")
        send(info(name="From the bus"))
    assert CourseOverview.objects.get(id=KEY).display_name == "From the bus"
    assert scheduled.call_count == 1  # the second request coalesced into the first


# --- The consumer: undecodable messages ---------------------------------------------------------


def bare_consumer():
    """The consumer's message handling without a Redis behind it."""
    consumer = object.__new__(bus_consumer.CatalogEventConsumer)
    consumer.full_topic = "course-catalog-info-changed"
    consumer.consumer = bus_consumer._TrackedStream(mock.Mock())
    return consumer


def test_garbage_avro_is_undecodable_not_a_receiver_error(caplog):
    consumer = bare_consumer()
    consumer.consumer._stream.read.return_value = [(b"1700000000000-0", {b"event_data": b"\xff\x00junk"})]
    raw = consumer.consumer.read(count=1)
    metadata = EventsMetadata(event_type=COURSE_CATALOG_INFO_CHANGED.event_type, minorversion=0)
    msg = RedisMessage(
        topic=consumer.full_topic, event_data=raw[0][1][b"event_data"], event_metadata=metadata
    )
    with pytest.raises(bus_consumer.UndecodableEvent):
        consumer.emit_signals_from_message(msg)
    before = events_counted("undecodable")
    with (
        caplog.at_level(logging.ERROR, "signals.consumer"),
        mock.patch.object(bus_consumer.RedisEventConsumer, "record_event_consuming_error"),
    ):
        consumer.record_event_consuming_error({}, bus_consumer.UndecodableEvent("bad"), msg)
    assert events_counted("undecodable") == before + 1
    assert "undecodable message 1700000000000-0 on course-catalog-info-changed skipped" in caplog.text
    assert not CourseOverview.objects.exists()


def test_unreadable_headers_are_logged_with_the_stream_id(caplog):
    from edx_event_bus_redis.internal.message import UnusableMessageError

    consumer = bare_consumer()
    consumer.consumer._stream.__getitem__ = mock.Mock()
    consumer.consumer._stream.read.return_value = [(b"1700000000001-0", {b"junk": b"junk"})]
    with pytest.raises(UnusableMessageError):
        RedisMessage.parse(consumer.consumer.read(count=1)[0], consumer.full_topic)
    with (
        caplog.at_level(logging.ERROR, "signals.consumer"),
        mock.patch.object(bus_consumer.RedisEventConsumer, "record_event_consuming_error"),
    ):
        consumer.record_event_consuming_error({}, UnusableMessageError("no headers"), None)
    assert "undecodable message 1700000000001-0" in caplog.text


# --- A new course the catalog does not know yet (catalog.newcourse) -----------------------------


@pytest.mark.parametrize(
    ("age", "delay"),
    [(-5, FIRST_RECHECK), (0, FIRST_RECHECK), (2, 60), (62, 62), (130, 130), (500, 500), (601, MAX_RECHECK)],
)
def test_recheck_delay_grows_with_the_course_age(age, delay):
    assert recheck_delay(T0 - timedelta(seconds=age), T0, window=3600) == delay


def test_recheck_stops_once_the_course_is_no_longer_new():
    assert recheck_delay(T0 - timedelta(seconds=3599), T0, window=3600) == MAX_RECHECK
    assert recheck_delay(T0 - timedelta(seconds=3600), T0, window=3600) is None
    assert recheck_delay(T0 - timedelta(seconds=10), T0, window=5) is None


def test_delays_double_from_one_look_to_the_next():
    created, now, delays = T0, T0 + timedelta(seconds=2), []
    while (delay := recheck_delay(created, now, window=3600)) is not None:
        delays.append(delay)
        now += timedelta(seconds=delay)
    assert delays[:6] == [60, 62, 124, 248, 496, 600]
    assert set(delays[6:]) == {600} and len(delays) == 10  # the last one at 3392 s


def test_a_new_missing_course_schedules_its_own_recheck(wire, scheduled):
    CourseOverviewFactory(id=CourseKey.from_string(KEY))  # created now; the catalog has no such run
    assert refresh_tasks.refresh_course(KEY) == "missing-recheck"
    assert CourseOverview.objects.get(id=KEY).catalog_status == CatalogStatus.MISSING
    assert scheduled.call_count == 1
    assert scheduled.call_args.args[0] == (KEY,)
    assert scheduled.call_args.kwargs["countdown"] == FIRST_RECHECK
    # The recheck finds it once the catalog has it.
    wire.add(catalog_run(KEY, marketing_url="https://late.example/x"))
    assert refresh_tasks.refresh_course(KEY) == "ok"
    assert CourseOverview.objects.get(id=KEY).marketing_url == "https://late.example/x"
    assert scheduled.call_count == 1


def test_an_old_missing_course_is_left_to_the_sweep(wire, scheduled, settings):
    CourseOverviewFactory(id=CourseKey.from_string(KEY))
    CourseOverview.objects.filter(id=KEY).update(created=timezone.now() - timedelta(hours=2))
    assert refresh_tasks.refresh_course(KEY) == "ok"
    assert scheduled.call_count == 0
    settings.CATALOG_NEW_COURSE_WINDOW = 3 * 3600  # tunable: "recently" is three hours now
    assert refresh_tasks.refresh_course(KEY) == "missing-recheck"
    assert scheduled.call_args.kwargs["countdown"] == MAX_RECHECK


def test_a_found_course_is_not_rechecked(wire, scheduled):
    wire.add(catalog_run(KEY))
    CourseOverviewFactory(id=CourseKey.from_string(KEY))
    assert refresh_tasks.refresh_course(KEY) == "ok"
    assert scheduled.call_count == 0
