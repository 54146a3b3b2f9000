"""Course publish end to end: manage.py publishes, a real Celery worker fetches from the stand-in
catalog over HTTP. Every test runs on each supported stack (the ``service`` fixture is parametrized
over embedded, redis-pg and rabbitmq-pg)."""

from __future__ import annotations

import signal
import time

import pytest

from catalog.mapping import map_course_run
from catalog.switches import DISABLE_CATALOG_CALLS
from standin import lms_course_records
from tests.integration.harness import wait_until

pytestmark = pytest.mark.integration


def _fetches(standin, key: str) -> int:
    """Catalog requests that asked for this course (by the keys filter or the detail route)."""
    stats = standin.stats()
    return stats["keys_requested"].get(key, 0) + stats["detail_by_key"].get(key, 0)


@pytest.fixture
def course(service, standin):
    """An imported, never-synced course the catalog knows, with a marketing URL."""
    run = next(r for r in standin.state.runs() if r["marketing_url"] and r["key"].startswith("course-v1:"))
    records = [r for r in lms_course_records([run], lms_only=0, ccx_every=0)]
    service.import_courses(records)
    return run


def _synced(service, key, expected_url):
    row = service.dump()[key]
    return row["catalog_status"] == "ok" and row["marketing_url"] == expected_url and row


def test_a_publish_makes_the_catalog_fields_appear_within_seconds(service, standin, course):
    service.start_worker()
    started = time.monotonic()
    service.manage("simulate_publish", course["key"])
    row = wait_until(lambda: _synced(service, course["key"], course["marketing_url"]), 20, what="sync")
    assert time.monotonic() - started < 20
    assert row["language"] == map_course_run(course)["language"]


def test_with_the_catalog_down_synced_fields_survive_and_arrive_once_it_is_back(service, standin, course):
    service.start_worker()
    service.manage("refresh_course", course["key"])
    old_url = course["marketing_url"]
    new_url = old_url + "-renamed"
    standin.state.update(course["key"], marketing_url=new_url)
    standin.set_faults(down=True)

    service.manage("simulate_publish", course["key"], "--display-name", "Republished")
    wait_until(lambda: "retry 2" in service.worker_log(), 30, what="two retries while the catalog is down")
    row = service.dump()[course["key"]]
    assert row["marketing_url"] == old_url and row["display_name"] == "Republished"

    standin.set_faults(down=False)
    wait_until(lambda: _synced(service, course["key"], new_url), 60, what="convergence after the outage")


def test_fifty_publishes_within_a_second_cost_at_most_two_fetches(service, standin, course):
    service.start_worker()
    standin.reset_stats()
    started = time.monotonic()
    service.manage("simulate_publish", *[course["key"]] * 50)
    assert time.monotonic() - started < 10
    wait_until(lambda: _synced(service, course["key"], course["marketing_url"]), 20, what="sync")
    service.settle()  # every task the publishes queued has run: a late extra fetch would be in by now
    assert 1 <= _fetches(standin, course["key"]) <= 2


def test_a_worker_killed_mid_task_still_ends_with_the_course_synced_by_redelivery(service, standin, course):
    """The pool process running the task is SIGKILLed; its worker survives and rejects the message
    back to the broker (task_reject_on_worker_lost). A SIGKILL of the whole worker is in
    test_process_faults.py."""
    worker = service.start_worker()
    standin.set_faults(latency_ms=4000)
    service.manage("simulate_publish", course["key"])
    wait_until(lambda: standin.stats()["requests"] >= 1, 20, what="the task's catalog request in flight")
    children = service.pool_children(worker)
    assert children, "prefork pool child not found"
    for child in children:
        child.send_signal(signal.SIGKILL)
    standin.set_faults(latency_ms=0)
    # task_reject_on_worker_lost: the message goes back to the queue and a new pool child runs it
    wait_until(lambda: _synced(service, course["key"], course["marketing_url"]), 40, what="redelivery")
    assert "WorkerLostError" in service.worker_log() or "SIGKILL" in service.worker_log()


def test_with_the_kill_switch_on_no_catalog_request_at_all(service, standin, course):
    service.manage("waffle_switch", DISABLE_CATALOG_CALLS, "on", "--create")
    service.start_worker()
    standin.reset_stats()
    service.manage("simulate_publish", course["key"], "--display-name", "Killed")
    service.settle()  # whatever the publish queued has run (or nothing reached the worker)
    assert standin.stats()["requests"] == 0
    row = service.dump()[course["key"]]
    assert row["display_name"] == "Killed" and row["catalog_status"] == "never"
