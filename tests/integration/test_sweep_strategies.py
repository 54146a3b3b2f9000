"""Walk + repair over real HTTP: on real Celery workers on each stack, and in this process under
the catalog's faults (like ``test_fault_matrix``).

Every test ends with every overview compared to the stand-in's final state (``GET /_standin/runs``:
the list moved while it was walked) and the run's record compared to the stand-in's own count."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import pytest
import requests
from opaque_keys.edx.keys import CourseKey

from catalog.connection import build_client
from catalog.mapping import map_course_run
from catalog.models import SweepRun, SweepStatus
from catalog.retry import in_process_policy
from catalog.sync import catalog_key_for
from overviews.models import CATALOG_FIELDS, CatalogStatus, CourseOverview
from standin import StandinServer, generate_runs, lms_course_records
from standin.semantics import sort_key
from tests.integration.harness import Service, configure, wait_until

pytestmark = pytest.mark.integration

RUNS = 600
FRONT = 40  # runs first in list order the LMS does not have: the drift deletes only these
LMS_RUNS = 500


def final_state(server: StandinServer) -> dict[str, dict[str, Any]]:
    """The catalog's runs now, by key, as its control route serves them."""
    body = requests.get(f"{server.base_url}_standin/runs", timeout=10).json()
    assert body["count"] == len(body["runs"])
    return {run["key"]: run for run in body["runs"]}


def wrong_rows(rows: dict[str, dict[str, Any]], catalog: dict[str, dict[str, Any]]) -> list[tuple]:
    """Rows (by key: catalog fields and status) that differ from the catalog's runs."""
    wrong = []
    for key, row in rows.items():
        run = catalog.get(catalog_key_for(key))
        if run is None:
            if row["catalog_status"] != CatalogStatus.MISSING:
                wrong.append((key, "should be missing", row["catalog_status"]))
            continue
        expected = map_course_run(run)
        actual = {name: row[name] for name in expected}
        if actual != expected or row["catalog_status"] != CatalogStatus.OK:
            wrong.append((key, expected, actual, row["catalog_status"]))
    return wrong


def lms_records(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The LMS: ``LMS_RUNS`` runs after the first ``FRONT`` in list order, one CCX course (of the
    first new-style run) and one course the catalog does not have."""
    ordered = sorted(runs, key=lambda run: sort_key(run["key"]))
    records = lms_course_records(ordered[FRONT : FRONT + LMS_RUNS], ccx_every=10_000, lms_only=1)
    assert sum(r["id"].startswith("ccx-v1:") for r in records) == 1
    assert len(records) == LMS_RUNS + 2
    return records


# -- on real workers, each stack ------------------------------------------------------------------


@pytest.fixture
def standin():
    """The ``service`` fixture's catalog: 600 runs."""
    with StandinServer(generate_runs(RUNS, seed=23)) as server:
        yield server


def _run_row(service) -> dict[str, Any] | None:
    fields = (
        "status",
        "strategy",
        "courses_seen",
        "courses_missing",
        "catalog_requests",
        "walk_pages",
        "walk_done",
        "walk_error",
        "chunks_total",
        "chunks_failed",
        "error",
    )
    rows = service.sql(f"select {', '.join(fields)} from catalog_sweeprun order by id")  # noqa: S608
    if not rows:
        return None
    assert len(rows) == 1, rows
    return dict(zip(fields, rows[0], strict=True))


def test_walk_and_repair_on_workers_leaves_every_overview_right_under_drift(service, standin):
    records = lms_records(standin.state.runs())
    service.import_courses(records)
    service.start_worker(concurrency=1)  # one process: one token, so the bound below is exact
    # between walk pages 3 runs leave the front of the list and 2 arrive there: the walk skips
    # one run a page (only runs the LMS does not have are deleted: FRONT of them are first)
    standin.set_faults(delete_between_pages=3, insert_between_pages=2)
    standin.reset_stats()
    started = time.monotonic()

    service.manage("sync_catalog", "--async", "--strategy", "walk", "--page-size", "50")
    run = wait_until(
        lambda: (r := _run_row(service)) and r["status"] != "running" and r,
        60,
        interval=0.3,
        what="the walk + repair sweep to finish",
    )
    seconds = time.monotonic() - started

    assert run["status"] == SweepStatus.COMPLETE, run
    assert run["strategy"] == "walk" and run["walk_done"] and not run["walk_error"], run
    catalog = final_state(standin)
    stats = standin.stats()
    assert stats["deleted"] >= 3 and stats["inserted"] >= 2  # the list moved under the walk
    assert not set(stats["deleted_keys"]) & {r["id"] for r in records}
    rows = service.dump()
    assert len(rows) == len(records)
    assert wrong_rows(rows, catalog) == []
    assert run["courses_seen"] == len(records) and run["courses_missing"] == 1
    assert run["chunks_total"] >= 1 and run["chunks_failed"] == 0
    # the repair: the LMS-only course, and the courses the walk skipped (the list moved under it)
    repaired = service.sql("select coalesce(sum(seen), 0) from catalog_sweepchunk")[0][0]
    assert repaired >= 2, repaired
    # the run counted every request the catalog received: the token, the probe, the pages, the repair
    assert run["catalog_requests"] == stats["requests"], (run, stats["requests"])
    assert stats["requests"] <= run["walk_pages"] + run["chunks_total"] + 2, (run, stats)
    assert seconds < 40, f"the sweep took {seconds:.1f}s"


def test_walk_and_repair_on_workers_under_a_throttle_of_5_a_second_never_ask_before_retry_after(
    service, standin
):
    """course-discovery's per-user throttle at 5 requests a second: the walk's pages and the
    repair's chunks, on two worker processes, wait out every Retry-After (the fleet's pause), and
    every overview ends right."""
    records = lms_records(standin.state.runs())
    service.import_courses(records)
    service.manage(  # an operator's edit in the admin: walk pages of 40 at most (15 pages, not 6)
        "shell",
        "-c",
        "from catalog.models import CatalogIntegration as C\n"
        "C.objects.create(enabled=True, walk_page_size_ceiling=40)\n",
    )
    service.start_worker(concurrency=2)
    # and the list moves: one run a page skipped (deletes eat the inserted runs first, then FRONT)
    standin.set_faults(
        throttle_per_window=5, throttle_window_s=1.0, delete_between_pages=3, insert_between_pages=2
    )
    standin.reset_stats()

    service.manage("sync_catalog", "--async", "--strategy", "walk", "--page-size", "10")
    run = wait_until(
        lambda: (r := _run_row(service)) and r["status"] != "running" and r, 60, what="the sweep to finish"
    )

    assert run["status"] == SweepStatus.COMPLETE and run["walk_done"], run
    assert wrong_rows(service.dump(), final_state(standin)) == []
    assert run["courses_seen"] == len(records)
    stats = standin.stats()
    assert stats["status_429"] >= 2 and run["catalog_requests"] == stats["requests"], (run, stats["requests"])
    assert run["walk_pages"] >= 15
    assert not set(stats["deleted_keys"]) & {r["id"] for r in records}
    answers = [(when, status) for when, route, status in stats["answers"] if route != "token"]
    for throttled_at in (when for when, status in answers if status == 429):
        # Retry-After: 1 (a one-second window). A request another process sent before this 429
        # reached the fleet's pause may still arrive just after it; none later, until Retry-After.
        early = [
            round(when - throttled_at, 3)
            for when, _ in answers
            if throttled_at + 0.15 < when < throttled_at + 0.99
        ]
        assert not early, f"request(s) {early} s after a 429 with Retry-After: 1"


LEASE_TTL = 3  # seconds: a dead sweep's lease expires quickly, so a resume is quick to test


def _heartbeat_age(service) -> float:
    [(beat,)] = service.sql("select heartbeat_at from catalog_sweeprun")
    if beat is None:
        return 0.0
    if isinstance(beat, str):  # SQLite: UTC text
        beat = datetime.fromisoformat(beat)
    if beat.tzinfo is None:
        beat = beat.replace(tzinfo=UTC)
    return (datetime.now(UTC) - beat).total_seconds()


def _busy(log: str) -> bool:
    """The worker holds a task it has not finished (Celery's received/succeeded lines)."""
    ended = sum(log.count(f"] {word}") for word in ("succeeded in", "retry: ", "raised unexpected"))
    return log.count("] received") > ended


def test_a_worker_sigkilled_mid_walk_the_sweep_resumes_from_the_walks_checkpoint(tmp_path, standin, stack):
    """The walk's worker is SIGKILLed while a page is in flight. RabbitMQ redelivers the walk's
    message at once; on Redis (an hour's visibility timeout) and the embedded broker (the message
    is lost) the next trigger takes the run over once its lease has expired. Either way the walk
    goes on from its checkpoint, not from the start, and the run counts every course once."""
    service = Service(tmp_path, standin, stack=stack, lease_ttl=LEASE_TTL)
    try:
        records = lms_records(standin.state.runs())
        service.import_courses(records)
        standin.set_faults(latency_ms=700)  # a walk page is mostly its request in flight
        worker = service.start_worker(concurrency=1)
        service.manage("sync_catalog", "--async", "--strategy", "walk", "--page-size", "20")
        wait_until(
            lambda: (r := _run_row(service)) and r["walk_pages"] >= 2 and _busy(service.worker_log()),
            60,
            interval=0.05,
            what="two walk pages done and the next one in flight",
        )
        service.kill_worker(worker)
        [(offset, pages)] = service.sql("select walk_offset, walk_pages from catalog_sweeprun")
        assert 0 < offset < RUNS and not _run_row(service)["walk_done"]
        time.sleep(1.0)  # the dead worker's page is answered (to nobody) before the count is taken
        standin.set_faults(latency_ms=0)
        served_before = len(standin.stats()["list_items"])

        service.start_worker(concurrency=1, name="w2")
        if stack != "rabbitmq-pg":
            wait_until(lambda: _heartbeat_age(service) > LEASE_TTL + 0.5, 30, what="the dead run's lease")
            service.manage("sync_catalog", "--async")  # the next trigger takes it over
        run = wait_until(
            lambda: (r := _run_row(service)) and r["status"] != "running" and r,
            60,
            what="the sweep to finish",
        )

        assert run["status"] == SweepStatus.COMPLETE and run["walk_done"], run
        [(resumed, walk_sizes)] = service.sql("select resumed, walk_sizes from catalog_sweeprun")
        assert resumed == (0 if stack == "rabbitmq-pg" else 1)
        assert wrong_rows(service.dump(), final_state(standin)) == []
        assert run["courses_seen"] == len(records), run  # each course once, across the kill
        # not started over: after the kill the walk served the runs from its checkpoint on
        stats = standin.stats()
        served_after = sum(stats["list_items"][served_before:])
        assert served_after <= RUNS - offset + 2 * LMS_RUNS // 10, (offset, served_after, walk_sizes)
        assert run["walk_pages"] > pages
        # the dead worker's page in flight was sent and never recorded; everything else was
        assert 0 <= stats["requests"] - run["catalog_requests"] <= 1, (stats["requests"], run)
    finally:
        service.stop()


# -- in this process, under faults --------------------------------------------------------------


@pytest.fixture
def catalog(settings, db):
    """The stand-in with 300 runs, our table holding 240 of them (after the first 30 in list
    order), a CCX course and a course the catalog does not have."""
    runs = generate_runs(300, seed=29)
    with StandinServer(runs) as server:
        settings.CATALOG_API_URL = server.api_url
        settings.CATALOG_OAUTH_URL = server.oauth_url
        settings.CATALOG_CLIENT_ID = server.client_id
        settings.CATALOG_CLIENT_SECRET = server.client_secret
        ordered = sorted(runs, key=lambda run: sort_key(run["key"]))
        records = lms_course_records(ordered[30:270], ccx_every=10_000, lms_only=1)
        CourseOverview.objects.bulk_create(
            CourseOverview(id=CourseKey.from_string(r["id"]), display_name=r["display_name"]) for r in records
        )
        configure()
        server.reset_stats()
        yield server


def walk_sweep(page_size: int = 10, *, after_probe=None, on_page=None) -> SweepRun:
    """The in-process sweep, told to walk: the coordinator's choice (the count probe), then
    ``after_probe()``, then the walk and the repair (``sync_catalog --strategy walk``'s path)."""
    from catalog import sweep as sweeps

    with build_client() as client:
        run = sweeps.start_sweep("command", page_size=page_size, in_process=True)
        run = sweeps.decide_strategy(run, client, forced="walk")
        if after_probe:
            after_probe()
        return sweeps.run_in_process(
            run,
            client,
            policy=in_process_policy(3),
            on_chunk=(lambda chunk, counters: on_page(chunk)) if on_page else None,
        )


def rows_now() -> dict[str, dict[str, Any]]:
    fields = ("catalog_status", *CATALOG_FIELDS)
    return {str(ov["id"]): ov for ov in CourseOverview.objects.values("id", *fields)}


def assert_right_and_counted(server: StandinServer, run: SweepRun) -> dict[str, Any]:
    assert run.status == SweepStatus.COMPLETE, (run.status, run.error, run.walk_error)
    assert run.strategy == "walk"
    assert wrong_rows(rows_now(), final_state(server)) == []
    assert run.courses_seen == CourseOverview.objects.count()  # each row once
    wait_until(lambda: server.stats()["requests"] >= run.catalog_requests, timeout=5, what="stats")
    stats = server.stats()
    assert run.catalog_requests == stats["requests"], (run.catalog_requests, stats["requests"])
    return stats


def walk_pages_asked():
    """Patch ``CatalogClient.list_page``: every walk page asked for, as ``[page_size, outcome]``
    (``ok`` or the error's class name), in order."""
    from catalog_client.client import CatalogClient

    asked: list[list[Any]] = []
    real = CatalogClient.list_page

    def list_page(self, page, page_size):
        entry = [page_size, "pending"]
        asked.append(entry)
        try:
            listed = real(self, page, page_size)
        except Exception as exc:
            entry[1] = type(exc).__name__
            raise
        entry[1] = "ok"
        return listed

    return asked, mock.patch.object(CatalogClient, "list_page", list_page)


def assert_each_failed_page_was_asked_again_at_half(asked: list[list[Any]], error: str) -> None:
    failed = [i for i, (_, outcome) in enumerate(asked) if outcome == error]
    assert failed, asked
    for i in failed:
        assert asked[i + 1][0] == max(1, asked[i][0] // 2), asked


def test_the_walk_under_5xx_bursts_shrinks_its_page_and_completes(catalog):
    pages = []

    def burst_after_three_pages(chunk):
        if chunk is None:  # a walk page, not a repair chunk
            pages.append(1)
            if len(pages) == 3:
                catalog.set_faults(error_rate=1.0, error_status=503, burst=2)

    asked, patched = walk_pages_asked()
    with patched:
        run = walk_sweep(10, on_page=burst_after_three_pages)

    stats = assert_right_and_counted(catalog, run)
    assert stats["status_5xx"] == 2 and run.retries == 2
    assert_each_failed_page_was_asked_again_at_half(asked, "CatalogServerError")
    assert max(size for size, outcome in asked if outcome != "ok") > 10  # it had grown before


def test_the_walk_under_a_throttle_of_5_a_second_never_asks_before_retry_after(catalog):
    configure(walk_page_size_ceiling=20)  # 300 runs: more than 5 pages, so the throttle bites
    catalog.set_faults(throttle_per_window=5, throttle_window_s=1.0)

    run = walk_sweep(10)

    stats = assert_right_and_counted(catalog, run)
    assert stats["status_429"] >= 1 and run.throttled == stats["status_429"]
    answers = [(when, status) for when, route, status in stats["answers"] if route in ("list", "detail")]
    for throttled_at in (when for when, status in answers if status == 429):
        # Retry-After was 1 s (a one-second window): nobody asked again before it
        early = [
            round(when - throttled_at, 3) for when, _ in answers if throttled_at < when < throttled_at + 0.99
        ]
        assert not early, f"request(s) {early} s after a 429 with Retry-After: 1"
    served = [when for when, status in answers if status == 200]
    for i in range(len(served) - 5):  # and never more than 5 answered in any one second
        assert served[i + 5] - served[i] >= 1.0 - 0.01, served[i : i + 6]


def test_a_catalog_that_caps_its_pages_is_still_walked_to_every_course(catalog):
    catalog.set_faults(max_page_size=15)

    run = walk_sweep(10)

    stats = assert_right_and_counted(catalog, run)
    assert max(stats["list_items"]) <= 15
    # every LMS course the catalog has was checked by the walk itself: the repair asked for none
    # (but the master of a CCX course, which the walk may leave to it)
    ours = {str(key) for key in CourseOverview.objects.values_list("id", flat=True)}
    listed = ours & set(final_state(catalog))
    masters = {catalog_key_for(key) for key in ours if key.startswith("ccx-v1:")}
    assert len(listed) == 240 and not (listed & set(stats["keys_requested"])) - masters
    # the cap cost a page or two, not a walk of pages of one: 300 runs at 15 a page and the probe
    assert run.walk_pages <= math.ceil(300 / 15) + 4, run.walk_sizes


def test_a_next_link_off_the_catalogs_origin_sends_nothing_there_and_the_walk_completes(catalog):
    with StandinServer(generate_runs(30, seed=11)) as elsewhere:
        catalog.set_faults(next_origin=elsewhere.base_url.rstrip("/"))

        run = walk_sweep(10)

        assert elsewhere.stats()["requests"] == 0  # not a token request, not a page: nothing
    stats = assert_right_and_counted(catalog, run)
    assert stats["injected"]["off_origin"] >= run.walk_pages - 1 >= 3
    assert not run.walk_error


def test_a_read_timeout_halves_the_walks_page_and_the_walk_completes(catalog):
    configure(read_timeout=0.5)  # the deadline is connect + read = 1 s
    pages = []

    def slow_after_three_pages(chunk):
        if chunk is None:
            pages.append(1)
            if len(pages) == 3:
                catalog.set_faults(latency_ms=1500, burst=1)

    asked, patched = walk_pages_asked()
    with patched:
        run = walk_sweep(10, on_page=slow_after_three_pages)

    assert_right_and_counted(catalog, run)
    assert run.retries == 1
    assert_each_failed_page_was_asked_again_at_half(asked, "CatalogTimeout")


def test_the_walks_page_grows_only_while_pages_answer_within_the_budget(catalog):
    """A catalog costing 10 ms a run and a 1 s budget: the walk doubles from 10 while a page takes
    under half the budget, and never asks for a page that would take more than the budget."""
    configure(walk_page_budget=1.0)
    catalog.set_faults(latency_per_item_ms=10)

    run = walk_sweep(10)

    assert_right_and_counted(catalog, run)
    sizes = [size for size, _ in run.walk_sizes]
    assert sizes[0] == 10 and max(sizes) > 10  # it grew
    assert max(sizes) * 0.010 <= 1.0, run.walk_sizes  # within the budget at 10 ms a run
