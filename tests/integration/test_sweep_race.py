"""The lost completion: many small chunks finished by several worker processes at once.

A sweep used to decide its completion from a cache counter (``cache.incr`` on a "done" hint). On
Django's database cache, the embedded default, ``incr`` is a read then a write, so two chunk
tasks finishing together lost an increment and the run stayed ``running`` for ever with every
chunk ``done``. Completion and counters now come from the rows; this test runs the scenario on the
embedded stack (SQLite file, database cache, SQLAlchemy broker) and on Redis + PostgreSQL (where
finishers really run in parallel and the run row's lock orders them).
"""

from __future__ import annotations

import pytest

from standin import StandinServer, generate_runs, lms_course_records
from tests.integration.conftest import STACK_SERVICES, ensure_services
from tests.integration.harness import Service, wait_until

pytestmark = pytest.mark.integration

COURSES = 400
PAGE_SIZE = 1  # 400 chunks: many finishers racing (at 5, the old code lost its completion only sometimes)


@pytest.fixture
def many_courses():
    with StandinServer(generate_runs(COURSES, seed=11)) as server:
        yield server


@pytest.mark.parametrize("stack", ["embedded", "redis-pg"])
def test_many_small_chunks_on_two_workers_complete_the_run_from_its_rows(tmp_path, many_courses, stack):
    ensure_services(*STACK_SERVICES[stack])
    service = Service(tmp_path, many_courses, stack=stack)
    try:
        records = lms_course_records(many_courses.state.runs(), lms_only=0, ccx_every=0)
        service.import_courses(records)
        # two worker processes of two pool processes each: four chunk tasks finish side by side
        service.start_worker(concurrency=2, name="w1")
        service.start_worker(concurrency=2, name="w2")
        many_courses.reset_stats()
        service.manage(
            "sync_catalog",
            "--strategy",
            "keys",
            "--async",
            "--page-size",
            str(PAGE_SIZE),
            "--strategy",
            "keys",
        )

        def run_row():
            rows = service.sql(
                "select id, status, planning_done, chunks_total, chunks_done, chunks_failed, "
                "courses_seen, courses_updated, catalog_requests from catalog_sweeprun"
            )
            return rows[0] if rows else None

        def chunks_settled():
            row = run_row()
            pending = service.sql("select count(*) from catalog_sweepchunk where status = 'pending'")[0][0]
            return row if row and row[2] and pending == 0 else None

        wait_until(chunks_settled, 180, interval=0.5, what="every chunk to be finished")
        # every chunk is finished; the run must be complete now (a lost completion stays running)
        run = wait_until(
            lambda: (row := run_row()) and row[1] != "running" and row,
            10,
            interval=0.2,
            what=f"the run to complete once its chunks were done (it is {run_row()})",
        )
        _, status, _, total, done, failed, seen, updated, requests = run
        assert status == "complete", run
        assert total == done == COURSES // PAGE_SIZE and failed == 0, run
        assert seen == updated == len(records), run
        # the counters are the sum of the chunk rows, and requests are what the catalog saw
        sums = service.sql(
            "select count(*), sum(seen), sum(updated), sum(catalog_requests) from catalog_sweepchunk"
        )[0]
        assert tuple(sums) == (total, seen, updated, requests)
        assert requests == many_courses.stats()["requests"]  # chunk fetches and token requests
        synced = service.sql("select count(*) from overviews_courseoverview where catalog_status = 'ok'")
        assert synced[0][0] == len(records)
    finally:
        service.stop()
