"""The event bus with the real parts: Studio-style events (openedx-events' Avro serializer through
edx-event-bus-redis's producer) on a real Redis stream, ``manage.py consume_events`` as its own
process (as any Open edX service runs it), a Celery worker and the stand-in catalog over HTTP.

Redis + PostgreSQL stack. The bus lives on db 13 of the test Redis (TEST_REDIS_PORT), under a topic
prefix of its own per test; its streams are deleted afterwards (db 13 is never flushed)."""

from __future__ import annotations

import json
import re
import secrets
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
from opaque_keys.edx.keys import CourseKey
from openedx_events.content_authoring.data import CourseCatalogData, CourseScheduleData
from openedx_events.content_authoring.signals import COURSE_CATALOG_INFO_CHANGED
from openedx_events.data import EventsMetadata

from standin import lms_course_records
from tests.integration.conftest import ensure_services
from tests.integration.harness import REDIS_URL, Service, wait_until

pytestmark = pytest.mark.integration

TOPIC = "course-catalog-info-changed"
BUS_URL = f"{REDIS_URL}/13"
T0 = datetime.now(UTC).replace(microsecond=0)


class Bus:
    """Studio's side of the bus: produces COURSE_CATALOG_INFO_CHANGED as edx-platform does."""

    def __init__(self, settings) -> None:
        self.prefix = f"it{secrets.token_hex(4)}"
        settings.EVENT_BUS_REDIS_CONNECTION_URL = BUS_URL
        settings.EVENT_BUS_TOPIC_PREFIX = self.prefix
        from edx_event_bus_redis import create_producer

        self.producer = create_producer()
        self.redis = redis.Redis.from_url(BUS_URL)
        self.stream = f"{self.prefix}-{TOPIC}"

    def publish(self, key: str, name: str, time: datetime, pacing: str = "self") -> None:
        info = CourseCatalogData(
            course_key=CourseKey.from_string(key),
            name=name,
            schedule_data=CourseScheduleData(start=datetime(2026, 9, 1, tzinfo=UTC), pacing=pacing),
        )
        self.producer.send(
            signal=COURSE_CATALOG_INFO_CHANGED,
            topic=TOPIC,
            event_key_field="catalog_info.course_key",
            event_data={"catalog_info": info},
            event_metadata=EventsMetadata(event_type=COURSE_CATALOG_INFO_CHANGED.event_type, time=time),
        )

    def garbage(self) -> list[str]:
        """Two poison messages: unreadable headers, and good headers over bytes that are not Avro."""
        junk = self.redis.xadd(self.stream, {b"junk": b"\x00\xff"})
        good = self.redis.xrange(self.stream, count=1)[0][1]
        bad_avro = self.redis.xadd(self.stream, {**good, b"event_data": b"\xff\xfe not avro"})
        return [junk.decode(), bad_avro.decode()]

    def close(self) -> None:
        self.redis.delete(self.stream)
        self.producer.client.close()


@pytest.fixture
def bus(settings):
    ensure_services("redis", "postgres")
    b = Bus(settings)
    yield b
    b.close()


@pytest.fixture
def svc(tmp_path, standin, bus):
    s = Service(tmp_path, standin, stack="redis-pg")
    s.env.update(
        EVENT_BUS_REDIS_CONNECTION_URL=BUS_URL,
        EVENT_BUS_TOPIC_PREFIX=bus.prefix,
        EVENT_BUS_REDIS_CONSUMER_POLL_TIMEOUT="1",
        CATALOG_NEW_COURSE_FIRST_RECHECK="1",  # course-discovery's delay, shortened for the test
    )
    yield s
    s.stop()


def start_consumer(svc: Service, name: str, log: str = "", group: str = "lms") -> subprocess.Popen:
    """``consume_events`` as an operator starts it; its output in ``consumer-<log or name>.log``."""
    extra = json.dumps({"consumer_name": name})
    log = f"consumer-{log or name}"
    proc = svc.start_process(
        [sys.executable, "manage.py", "consume_events", "-t", TOPIC, "-g", group, "--extra", extra],
        name=log,
    )
    wait_until(
        lambda: "Running consumer for" in svc.log(log) or proc.poll() is not None,
        60,
        what=f"consumer {name} running",
    )
    assert proc.poll() is None, svc.log(log)
    return proc


def applied(svc: Service, *names: str) -> list[tuple[str, str]]:
    """(course key, event time) of each event the receiver applied (created or updated), from
    the consumers' logs."""
    pattern = re.compile(r"event bus: (\S+): event \S+ of (\S+) (?:created|applied) ")
    return [m for n in names for m in pattern.findall(svc.log(f"consumer-{n}"))]


def row(svc: Service, key: str) -> dict | None:
    rows = svc.sql(
        "SELECT display_name, marketing_url, catalog_status, self_paced FROM overviews_courseoverview "
        "WHERE id = ?",
        (key,),
    )
    return (
        dict(zip(("display_name", "marketing_url", "catalog_status", "self_paced"), rows[0], strict=True))
        if rows
        else None
    )


def test_studio_events_over_redis_rename_create_ignore_and_survive_garbage(svc, standin, bus):
    runs = [r for r in standin.state.runs() if r["marketing_url"] and r["key"].startswith("course-v1:")]
    known, late = runs[0], runs[1]
    standin.state.delete(late["key"])  # the catalog does not know this one yet
    svc.import_courses(list(lms_course_records([known], lms_only=0, ccx_every=0)))
    svc.manage("refresh_course", known["key"])
    assert row(svc, known["key"])["marketing_url"] == known["marketing_url"]
    svc.start_worker()
    start_consumer(svc, "c1")

    # A rename lands in place; the catalog fields stay, then refresh (the catalog changed meanwhile).
    standin.state.update(known["key"], marketing_url="https://www.example.com/course/renamed")
    sent = time.monotonic()
    bus.publish(known["key"], "Renamed by Studio", T0, pacing="instructor")
    wait_until(lambda: row(svc, known["key"])["display_name"] == "Renamed by Studio", 10, what="rename")
    renamed = row(svc, known["key"])
    assert renamed["marketing_url"] in (known["marketing_url"], "https://www.example.com/course/renamed")
    assert renamed["self_paced"] is False
    wait_until(
        lambda: row(svc, known["key"])["marketing_url"] == "https://www.example.com/course/renamed",
        10,
        what="catalog refresh after the event",
    )
    fresh_after = time.monotonic() - sent
    print(f"\nevent -> fresh overview: {fresh_after:.2f}s")
    assert fresh_after < 10

    # A new course: created from the event, missing, then found once the catalog has it.
    bus.publish(late["key"], "Brand new", T0)
    wait_until(lambda: (r := row(svc, late["key"])) and r["catalog_status"] == "missing", 10, what="missing")
    standin.state.upsert(late)
    wait_until(
        lambda: row(svc, late["key"])["marketing_url"] == late["marketing_url"], 15, what="late catalog data"
    )
    assert row(svc, late["key"])["display_name"] == "Brand new"

    # A stale event (older than the rename) is ignored; garbage is survived; later events apply.
    bus.publish(known["key"], "Stale name", T0 - timedelta(minutes=5))
    poison = bus.garbage()
    bus.publish(known["key"], "Renamed again", T0 + timedelta(seconds=1))
    wait_until(lambda: row(svc, known["key"])["display_name"] == "Renamed again", 10, what="after garbage")
    log = svc.log("consumer-c1")
    assert "ignored (ignored_stale)" in log
    for stream_id in poison:
        assert f"undecodable message {stream_id} " in log
    # rename, new course, rename again (the row is written before its log line): not the stale one
    wait_until(lambda: len(applied(svc, "c1")) >= 3, 5, what="the last event's log line")
    assert len(applied(svc, "c1")) == 3


def test_a_restarted_consumer_resumes_and_two_consumers_share_the_group(svc, bus):
    keys = [f"course-v1:BusX+R{i:03d}+2026" for i in range(40)]

    def names() -> dict[str, str]:
        return dict(svc.sql("SELECT id, display_name FROM overviews_courseoverview WHERE id LIKE '%BusX+R%'"))

    c1 = start_consumer(svc, "c1")
    for i, key in enumerate(keys[:20]):
        bus.publish(key, f"first {i}", T0 + timedelta(seconds=i))
    wait_until(lambda: len(applied(svc, "c1")) >= 5, 20, what="consumer mid-stream")
    c1.send_signal(signal.SIGKILL)  # mid-stream: no shutdown; a message may be read and not acked
    c1.wait()
    assert len(names()) < 20, "the consumer was not stopped mid-stream"
    for i, key in enumerate(keys[20:], start=20):
        bus.publish(key, f"first {i}", T0 + timedelta(seconds=i))  # produced while it is down
    start_consumer(svc, "c1", log="c1-restarted")  # the same name: its unacked messages come first
    # Nothing lost: every event of the stream, before and during the outage, landed.
    wait_until(
        lambda: names() == {k: f"first {i}" for i, k in enumerate(keys)}, 30, what="resumed from the group"
    )
    # Nothing applied twice. (The message being handled at the kill may have been applied without
    # its log line; redelivered from the pending list, it is then ignored as a duplicate.)
    wait_until(lambda: len(applied(svc, "c1", "c1-restarted")) >= 39, 5, what="log lines")
    first = applied(svc, "c1", "c1-restarted")
    assert len(first) == len(set(first)) >= 39

    start_consumer(svc, "c2")  # the same group: the stream is shared, each event applied once
    for i, key in enumerate(keys):
        bus.publish(key, f"second {i}", T0 + timedelta(minutes=1, seconds=i))
    wait_until(
        lambda: names() == {k: f"second {i}" for i, k in enumerate(keys)}, 30, what="every event applied"
    )

    def second() -> list[tuple[str, str]]:
        return [e for e in applied(svc, "c1-restarted", "c2") if e not in first]

    wait_until(lambda: len(second()) >= 40, 5, what="log lines")
    assert len(second()) == len(set(second())) == 40
    assert applied(svc, "c2"), "the second consumer of the group got none of the stream"
    assert all(p.poll() is None for p in svc.workers if p is not c1)  # both consumers still run
