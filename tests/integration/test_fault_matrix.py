"""The HTTP fault matrix: each catalog fault over real HTTP, one test per cell.

The stand-in catalog serves from a thread; the sweep runs in this process through the public
command (``sync_catalog --no-progress --page-size N``), the per-course path through
``refresh_courses`` with a client from ``catalog.connection.build_client``. Every cell asserts
the final table -- every overview's catalog fields equal the catalog's, or, where the fault
persists, unchanged and the error recorded -- and a bound on the catalog requests, from the
stand-in's own count and from the client's (the ``SweepRun``'s ``catalog_requests``, summed from
``CatalogClient.requests_made``: the two must agree).

Retries are kept short by the admin configuration (``page_attempts``, timeouts) and a 1-second
``Retry-After``; the sweep's backoff is the production one (full jitter from 1 s).
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from opaque_keys.edx.keys import CourseKey

from catalog.connection import build_client
from catalog.mapping import map_course_run
from catalog.models import SweepChunk, SweepRun, SweepStatus
from catalog.refresh import refresh_courses
from catalog.sync import catalog_key_for
from overviews.models import CATALOG_FIELDS, CatalogStatus, CourseOverview
from standin import StandinServer, generate_runs, lms_course_records
from tests.integration.harness import configure, wait_until

pytestmark = [pytest.mark.django_db, pytest.mark.integration]

PAGE_SIZE = 10
KEPT = (*CATALOG_FIELDS, "catalog_synced_at")  # what a failed fetch must leave as it was


@pytest.fixture
def catalog(settings):
    """The stand-in with 30 runs, our table holding their LMS records (with a CCX course and a
    course the catalog does not know), and the connection settings pointing at it."""
    runs = generate_runs(30, seed=11)
    with StandinServer(runs) as server:
        settings.CATALOG_API_URL = server.api_url
        settings.CATALOG_OAUTH_URL = server.oauth_url
        settings.CATALOG_CLIENT_ID = server.client_id
        settings.CATALOG_CLIENT_SECRET = server.client_secret
        records = lms_course_records(runs, ccx_every=10)
        CourseOverview.objects.bulk_create(
            CourseOverview(id=CourseKey.from_string(r["id"]), display_name=r["display_name"]) for r in records
        )
        configure()
        server.reset_stats()
        yield server


@dataclass
class Sweep:
    code: int
    out: str
    error: str
    seconds: float
    run: SweepRun


def sweep() -> Sweep:
    out = io.StringIO()
    error = ""
    started = time.monotonic()
    try:
        call_command(
            "sync_catalog",
            "--no-progress",
            "--page-size",
            str(PAGE_SIZE),
            "--strategy",
            "keys",
            stdout=out,
            stderr=io.StringIO(),
        )
        code = 0
    except CommandError as exc:
        code, error = exc.returncode, str(exc)
    seconds = time.monotonic() - started
    return Sweep(code, out.getvalue(), error, seconds, SweepRun.objects.order_by("-pk").first())


def snapshot() -> dict[str, dict[str, Any]]:
    return {str(ov.id): {name: getattr(ov, name) for name in KEPT} for ov in CourseOverview.objects.all()}


def mismatches(server: StandinServer) -> list[tuple[Any, ...]]:
    """Rows whose catalog fields or status differ from what the catalog says now."""
    wrong = []
    for ov in CourseOverview.objects.all():
        run = server.state.get(catalog_key_for(str(ov.id)))
        if run is None:
            if ov.catalog_status != CatalogStatus.MISSING:
                wrong.append((str(ov.id), "should be missing", ov.catalog_status))
            continue
        expected = map_course_run(run)
        actual = {name: getattr(ov, name) for name in expected}
        if actual != expected or ov.catalog_status != CatalogStatus.OK:
            wrong.append((str(ov.id), expected, actual, ov.catalog_status, ov.catalog_error))
    return wrong


def assert_all_right(server: StandinServer, result: Sweep) -> None:
    assert result.code == 0, (result.error, result.out)
    assert result.run.status == SweepStatus.COMPLETE
    assert not mismatches(server)
    assert result.run.courses_seen == CourseOverview.objects.count()  # each row once


def assert_unchanged(before: dict[str, dict[str, Any]], result: Sweep, error_type: str) -> None:
    assert result.code == 1, result.out
    assert result.run.status == SweepStatus.FAILED
    assert error_type in result.run.error, result.run.error
    failed = SweepChunk.objects.filter(run=result.run, status="failed")
    assert failed.count() == 1 and error_type in failed.get().error
    assert snapshot() == before  # values and "last changed" kept: nothing wiped, nothing half-written


def api_requests(stats: dict[str, Any]) -> int:
    return stats["list"] + stats["detail"]


def counted_alike(server: StandinServer, run: SweepRun) -> dict[str, Any]:
    """The stand-in's count, once every request it received has been answered, equal to the
    client's count recorded on the run."""
    wait_until(lambda: server.stats()["requests"] >= run.catalog_requests, timeout=5, what="stats")
    stats = server.stats()
    assert run.catalog_requests == stats["requests"], (run.catalog_requests, stats)
    return stats


# -- 5xx ---------------------------------------------------------------------------------------------


def test_a_burst_of_5xx_is_retried_and_every_row_ends_right(catalog):
    catalog.set_faults(error_rate=1.0, error_status=503, burst=2)

    result = sweep()

    assert_all_right(catalog, result)
    stats = counted_alike(catalog, result.run)
    chunks = result.run.chunks_total
    assert stats["status_5xx"] == 2 and stats["token"] == 1
    assert api_requests(stats) == chunks + 2  # one per chunk, one more per failure
    assert result.run.retries == 2


def test_5xx_that_persist_stop_the_sweep_with_the_table_unchanged(catalog):
    configure(page_attempts=2)
    before = snapshot()
    catalog.set_faults(error_rate=1.0, error_status=502)

    result = sweep()

    assert_unchanged(before, result, "CatalogServerError")
    stats = counted_alike(catalog, result.run)
    assert 2 <= api_requests(stats) <= 2 + 1  # two attempts, and at most one chunk fetched ahead
    assert "HTTP 502" in result.run.error


# -- timeouts and connections ------------------------------------------------------------------------


def test_a_read_timeout_is_retried_within_the_call_deadline(catalog):
    configure(read_timeout=0.5)  # the deadline is connect + read = 1 s
    catalog.set_faults(latency_ms=2500, burst=1)

    result = sweep()

    assert_all_right(catalog, result)
    assert result.run.retries == 1
    # one 0.5 s read timeout and one backoff (at most 1 s) on top of a clean sweep's time
    assert result.seconds < 0.5 + 1 + 4
    wait_until(lambda: catalog.stats()["list"] == result.run.chunks_total + 1, timeout=5, what="the slow one")
    counted_alike(catalog, result.run)


def test_connection_refused_stops_the_sweep_and_a_restarted_catalog_finishes_it(catalog):
    configure(page_attempts=2)
    before = snapshot()
    catalog.stop()

    refused = sweep()

    assert_unchanged(before, refused, "CatalogConnectionError")
    # each attempt is one refused token request; at most one more for the chunk fetched ahead
    assert 2 <= refused.run.catalog_requests <= 3

    catalog.start()  # the same port: the catalog is back
    result = sweep()

    assert_all_right(catalog, result)
    stats = counted_alike(catalog, result.run)
    assert stats["token"] == 1 and api_requests(stats) == result.run.chunks_total


# -- throttling and tokens ---------------------------------------------------------------------------


def test_429_with_retry_after_is_honoured_and_not_retried_earlier(catalog):
    catalog.set_faults(force_429_count=1, retry_after_s=1)

    result = sweep()

    assert_all_right(catalog, result)
    stats = counted_alike(catalog, result.run)
    assert stats["status_429"] == 1 and result.run.throttled == 1
    assert api_requests(stats) == result.run.chunks_total + 1
    answers = [a for a in stats["answers"] if a[1] in ("list", "detail")]
    [throttled_at] = [when for when, _, status in answers if status == 429]
    later = [when for when, _, _ in answers if when > throttled_at]
    assert later and min(later) >= throttled_at + 1.0 - 0.01  # nobody asked again before Retry-After


def test_a_token_expiring_mid_sweep_costs_one_401_and_one_new_token(catalog):
    catalog.set_faults(expire_tokens_after=2)  # the second API request finds its token expired

    result = sweep()

    assert_all_right(catalog, result)
    stats = counted_alike(catalog, result.run)
    assert (stats["token"], stats["status_401"]) == (2, 1)
    assert api_requests(stats) == result.run.chunks_total + 1  # the 401, then the same request again
    assert result.run.retries == 0  # the client's own one retry with a fresh token, not the sweep's


# -- bodies ------------------------------------------------------------------------------------------

BODY_FAULTS = {
    "truncated": ({"truncate_rate": 1.0}, "truncated"),
    "invalid-json": ({"garbage_rate": 1.0}, "garbage"),
    "wrong-envelope": ({"wrong_envelope": True}, "wrong_envelope"),
}


@pytest.mark.parametrize("fault", BODY_FAULTS)
def test_a_bad_body_once_is_retried_and_every_row_ends_right(catalog, fault):
    faults, injected = BODY_FAULTS[fault]
    catalog.set_faults(**faults, burst=1)

    result = sweep()

    assert_all_right(catalog, result)
    stats = counted_alike(catalog, result.run)
    assert stats["injected"][injected] == 1 and result.run.retries == 1
    assert api_requests(stats) == result.run.chunks_total + 1


@pytest.mark.parametrize("fault", BODY_FAULTS)
def test_a_bad_body_that_persists_stops_the_sweep_with_the_table_unchanged(catalog, fault):
    configure(page_attempts=2)
    before = snapshot()
    faults, _ = BODY_FAULTS[fault]
    catalog.set_faults(**faults)

    result = sweep()

    assert_unchanged(before, result, "CatalogMalformedResponse")
    stats = counted_alike(catalog, result.run)
    assert 2 <= api_requests(stats) <= 3


def test_hostile_records_are_refused_counted_and_stored_values_kept(catalog):
    assert_all_right(catalog, sweep())
    keys = catalog.state.keys()
    hostile, changed = keys[:6], keys[6:9]
    for key in hostile + changed:  # the catalog changes all nine; six come back hostile
        run = catalog.state.get(key)
        catalog.state.update(key, eligible_for_financial_aid=not run["eligible_for_financial_aid"])
    catalog.set_faults(hostile_keys=hostile)
    before = snapshot()
    hostile_rows = [key for key in before if catalog_key_for(key) in hostile]
    catalog.reset_stats()

    result = sweep()

    assert result.code == 0, result.error
    assert result.run.courses_refused == len(hostile_rows) >= 6
    stats = counted_alike(catalog, result.run)
    assert stats["injected"]["hostile"] >= 6 and api_requests(stats) == result.run.chunks_total
    after = snapshot()
    for key in hostile_rows:  # no hostile value stored; the old ones kept
        assert {f: after[key][f] for f in CATALOG_FIELDS} == {f: before[key][f] for f in CATALOG_FIELDS}
        row = CourseOverview.objects.get(id=key)
        assert row.catalog_status == CatalogStatus.ERROR and "refused" in row.catalog_error
    wrong = {m[0] for m in mismatches(catalog)}
    assert wrong == set(hostile_rows)  # every other row took the catalog's new values


def test_a_next_link_off_the_catalogs_origin_is_never_followed(catalog):
    configure(page_attempts=2)
    before = snapshot()
    with StandinServer(generate_runs(30, seed=11)) as elsewhere:
        catalog.set_faults(max_page_size=4, next_origin=elsewhere.base_url.rstrip("/"))

        result = sweep()

        assert elsewhere.stats()["requests"] == 0  # not a token request, not a page: nothing
    assert_unchanged(before, result, "CatalogMalformedResponse")
    assert "origin" in result.run.error
    stats = counted_alike(catalog, result.run)
    assert stats["injected"]["off_origin"] >= 2 and 2 <= api_requests(stats) <= 3


@pytest.mark.parametrize("max_page_size", [0, 4], ids=["one-page-per-chunk", "pages-of-4"])
def test_data_changing_between_page_requests_skips_and_repeats_nothing(catalog, max_page_size):
    catalog.set_faults(insert_between_pages=3, max_page_size=max_page_size)
    wanted = {catalog_key_for(str(key)) for key in CourseOverview.objects.values_list("id", flat=True)}

    result = sweep()

    assert_all_right(catalog, result)
    stats = counted_alike(catalog, result.run)
    assert stats["inserted"] >= 3 * result.run.chunks_total
    assert set(stats["keys_requested"]) == wanted  # nothing skipped
    if max_page_size:  # each chunk walked its pages while runs were inserted in front of them
        assert (
            result.run.chunks_total
            < api_requests(stats)
            <= result.run.chunks_total * math.ceil(PAGE_SIZE / max_page_size)
        )
    else:  # nothing asked twice: a key is asked once per chunk holding a row that takes its data
        per_chunk = [
            {catalog_key_for(str(k)) for k in keys_in(chunk)}
            for chunk in SweepChunk.objects.filter(run=result.run)
        ]
        assert stats["keys_requested"] == {key: sum(key in c for c in per_chunk) for key in wanted}
        assert api_requests(stats) == result.run.chunks_total


def keys_in(chunk: SweepChunk) -> list[Any]:
    rows = CourseOverview.objects.filter(id__gte=chunk.first_key, id__lte=chunk.last_key)
    return list(rows.values_list("id", flat=True))


# -- every call bounded ------------------------------------------------------------------------------


def test_a_dripping_body_is_cut_at_the_deadline_in_a_sweep(catalog):
    configure(page_attempts=2, read_timeout=0.5)  # deadline: connect + read = 1 s per call
    before = snapshot()
    catalog.set_faults(drip_ms=20)  # a page of ~5 kB would take minutes at a byte every 20 ms

    result = sweep()

    assert_unchanged(before, result, "CatalogTimeout")
    assert "deadline" in result.run.error
    stats = counted_alike(catalog, result.run)
    calls = api_requests(stats)
    assert 2 <= calls <= 3 and stats["injected"]["drip"] == calls
    assert result.seconds < calls * 1.0 + 1.0 + 3.0  # the calls, one backoff (< 1 s), and slack


def test_a_dripping_body_is_cut_at_a_short_deadline_in_a_per_course_refresh(catalog):
    key = next(k for k in snapshot() if catalog.state.get(k))
    with build_client() as warm:  # the row synced first: its values are the catalog's
        assert refresh_courses([CourseOverview.objects.get(id=key).id], warm).error is None
    catalog.set_faults(drip_ms=20)

    with build_client(deadline=0.8) as client:
        assert client.config.deadline == 0.8 and client.config.read_timeout <= 0.8
        started = time.monotonic()
        outcome = refresh_courses(
            [CourseOverview.objects.get(id=key).id], client, record_retryable_errors=True
        )
        elapsed = time.monotonic() - started

    assert type(outcome.error).__name__ == "CatalogTimeout" and "0.8s deadline" in str(outcome.error)
    assert elapsed < 0.8 + 0.7
    row = CourseOverview.objects.get(id=key)
    assert row.catalog_status == CatalogStatus.ERROR and "CatalogTimeout" in row.catalog_error
    assert {name: getattr(row, name) for name in CATALOG_FIELDS} == map_course_run(catalog.state.get(key))
    assert catalog.stats()["injected"]["drip"] == 1 and client.requests_made == 2  # its token, the page


def test_an_oversize_body_is_capped_and_not_retried(catalog):
    before = snapshot()
    catalog.set_faults(oversize_bytes=400_000_000)  # no Content-Length: only counting stops it

    result = sweep()

    assert_unchanged(before, result, "CatalogResponseTooLarge")
    assert "too large" in result.run.error and result.run.retries == 0  # not worth a retry
    stats = counted_alike(catalog, result.run)
    assert 1 <= api_requests(stats) <= 2  # one attempt, and at most one chunk fetched ahead
    assert result.seconds < 15  # stopped at the 32 MB cap; 400 MB would not have been read so fast


def test_an_oversize_body_is_recorded_on_the_row_in_a_per_course_refresh(catalog):
    key = next(k for k in snapshot() if catalog.state.get(k))
    catalog.set_faults(oversize_bytes=400_000_000, oversize_declared=True)

    with build_client() as client:
        outcome = refresh_courses([CourseOverview.objects.get(id=key).id], client)

    assert type(outcome.error).__name__ == "CatalogResponseTooLarge" and not outcome.error.retryable
    row = CourseOverview.objects.get(id=key)
    assert row.catalog_status == CatalogStatus.ERROR and "CatalogResponseTooLarge" in row.catalog_error
    assert client.requests_made == 2  # the token, the one refused answer
