"""The sync core against a catalog mocked at the wire, with the real client."""

from __future__ import annotations

import pytest
import responses
from django.db import connection
from django.test.utils import CaptureQueriesContext
from opaque_keys.edx.keys import CourseKey

from catalog import sweep as sweeps
from catalog.models import SweepRun
from catalog.retry import in_process_policy
from catalog.sync import catalog_key_for, sync_overviews
from catalog_client.errors import CatalogError
from overviews.models import CatalogStatus, CourseOverview
from tests.factories import CourseOverviewFactory, catalog_run
from tests.wire import WireCatalog

pytestmark = pytest.mark.django_db


@pytest.fixture
def wire():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield WireCatalog(rsps)


def _page():
    return list(CourseOverview.objects.order_by("id"))


def test_sync_writes_catalog_fields_then_a_second_run_only_stamps_last_checked(wire, catalog_client):
    overviews = CourseOverviewFactory.create_batch(3)
    for ov in overviews:
        wire.add(
            catalog_run(str(ov.id), marketing_url=f"https://m.example/{ov.number}", content_language="es")
        )

    first = sync_overviews(_page(), catalog_client).counters
    assert (first.seen, first.updated, first.unchanged) == (3, 3, 0)
    for ov in CourseOverview.objects.all():
        assert ov.marketing_url == f"https://m.example/{ov.number}"
        assert ov.language == "es"
        assert ov.catalog_status == CatalogStatus.OK
        assert ov.catalog_synced_at is not None

    first_times = dict(CourseOverview.objects.values_list("id", "catalog_synced_at"))
    assert first_times == dict(CourseOverview.objects.values_list("id", "catalog_checked_at"))

    with CaptureQueriesContext(connection) as queries:
        second = sync_overviews(_page(), catalog_client).counters
    assert (second.updated, second.unchanged) == (0, 3)
    assert len([q for q in queries.captured_queries if q["sql"].startswith("UPDATE")]) == 1
    for ov in CourseOverview.objects.all():
        # "last changed" stays at the first write; "last checked" moves to the second answer
        assert ov.catalog_synced_at == first_times[ov.id]
        assert ov.catalog_checked_at > first_times[ov.id]
        assert ov.catalog_attempted_at is not None and ov.catalog_attempted_at <= ov.catalog_checked_at


def test_unknown_course_is_missing_and_keeps_its_stored_values(wire, catalog_client):
    ov = CourseOverviewFactory(marketing_url="https://old.example/x", catalog_status=CatalogStatus.OK)
    counters = sync_overviews(_page(), catalog_client).counters
    assert counters.missing == 1
    ov.refresh_from_db()
    assert ov.catalog_status == CatalogStatus.MISSING
    assert ov.marketing_url == "https://old.example/x"


def test_refused_record_is_counted_logged_and_stored_values_kept(wire, catalog_client, caplog):
    ov = CourseOverviewFactory(marketing_url="https://good.example/x", language="en")
    wire.add(catalog_run(str(ov.id), marketing_url="javascript:alert(1)", content_language="de"))
    counters = sync_overviews(_page(), catalog_client).counters
    assert counters.refused == 1 and counters.updated == 0
    ov.refresh_from_db()
    assert (ov.marketing_url, ov.language) == ("https://good.example/x", "en")
    assert ov.catalog_status == CatalogStatus.ERROR and "refused" in ov.catalog_error
    assert str(ov.id) in caplog.text


def test_ccx_courses_take_their_masters_data_and_each_master_is_fetched_once(wire, catalog_client):
    master = CourseOverviewFactory(id=CourseKey.from_string("course-v1:MITx+6.00x+2024"))
    ccx = [CourseOverviewFactory(id=CourseKey.from_string(f"ccx-v1:MITx+6.00x+2024+ccx@{i}")) for i in (1, 2)]
    wire.add(catalog_run("course-v1:MITx+6.00x+2024", marketing_url="https://m.example/600x"))
    assert catalog_key_for(ccx[0].id) == "course-v1:MITx+6.00x+2024"

    counters = sync_overviews(_page(), catalog_client).counters
    assert counters.updated == 3
    assert wire.requested_keys == {"course-v1:MITx+6.00x+2024": 1}
    for row in (master, *ccx):
        row.refresh_from_db()
        assert row.marketing_url == "https://m.example/600x"


def test_runs_the_lms_does_not_have_are_ignored_and_never_create_rows(wire, catalog_client):
    ov = CourseOverviewFactory()
    wire.add(catalog_run(str(ov.id)), catalog_run("course-v1:Other+X+1"))
    # the stand-in answers only the keys asked for; a catalog that answers more is counted, not obeyed
    wire.before_list = None
    sync_overviews(_page(), catalog_client)
    assert CourseOverview.objects.count() == 1


def test_a_failed_fetch_raises_a_typed_error_and_writes_nothing(wire, catalog_client):
    ov = CourseOverviewFactory(marketing_url="https://keep.example/x", catalog_status=CatalogStatus.OK)
    wire.before_list = lambda w: (503, {}, "<html>Service Unavailable</html>")
    with pytest.raises(CatalogError) as info:
        sync_overviews(_page(), catalog_client)
    assert info.value.retryable
    ov.refresh_from_db()
    assert (ov.marketing_url, ov.catalog_status) == ("https://keep.example/x", CatalogStatus.OK)


def test_dry_run_reports_changes_and_writes_nothing(wire, catalog_client):
    ov = CourseOverviewFactory()
    wire.add(catalog_run(str(ov.id), marketing_url="https://new.example/x"))
    result = sync_overviews(_page(), catalog_client, dry_run=True)
    assert ("marketing_url", None, "https://new.example/x") in [
        (c.field, c.old, c.new) for c in result.changes
    ]
    ov.refresh_from_db()
    assert ov.marketing_url is None and ov.catalog_status == CatalogStatus.NEVER


def _bounded(sleep):
    """``sleep``, failing the test when the retries never end (a count that does not advance)."""
    calls = []

    def bounded(seconds):
        calls.append(seconds)
        assert len(calls) < 50, "the retries never ended: the retry count did not advance"
        if sleep is not None:
            sleep(seconds)

    return bounded


def sweep(client, *, page_size, attempts=5, sleep=None):
    """The one in-process sweep, as ``sync_catalog`` runs it."""
    run = sweeps.start_sweep("command", page_size=page_size, in_process=True)
    return sweeps.run_in_process(run, client, policy=in_process_policy(attempts), sleep=_bounded(sleep))


def dry_run(client, *, page_size, attempts=5, sleep=None):
    return sweeps.dry_run(
        client, page_size=page_size, policy=in_process_policy(attempts), sleep=_bounded(sleep)
    )


@pytest.mark.parametrize("courses", [60, 240])
def test_overview_updates_per_page_are_one_statement_and_a_second_sweep_only_stamps(
    wire, catalog_client, courses
):
    rows = CourseOverviewFactory.create_batch(courses)
    wire.add(*(catalog_run(str(ov.id)) for ov in rows))
    table = CourseOverview._meta.db_table
    page_size = 30
    pages = courses // page_size

    def overview_writes(queries):
        return [q["sql"] for q in queries.captured_queries if q["sql"].startswith(f'UPDATE "{table}"')]

    with CaptureQueriesContext(connection) as queries:
        result = sweep(catalog_client, page_size=page_size)
    assert result.status == "complete" and result.courses_updated == courses
    assert len(overview_writes(queries)) == pages  # one guarded write a page, whatever its size

    # A second sweep changes nothing but still stamps "last checked": the same one UPDATE a page.
    with CaptureQueriesContext(connection) as queries:
        again = sweep(catalog_client, page_size=page_size)
    assert again.status == "complete" and (again.courses_updated, again.courses_unchanged) == (0, courses)
    assert len(overview_writes(queries)) == pages
    assert CourseOverview.objects.filter(catalog_checked_at__isnull=True).count() == 0


def test_sweep_stops_when_a_page_keeps_failing_and_keeps_what_was_written(wire, catalog_client):
    rows = CourseOverviewFactory.create_batch(20)
    wire.add(*(catalog_run(str(ov.id)) for ov in rows))
    wire.before_list = lambda w: (503, {}, "down") if w.list_requests > 1 else None
    slept = []
    result = sweep(catalog_client, page_size=10, attempts=3, sleep=slept.append)
    assert result.status == "failed" and "CatalogServerError" in result.error
    assert result.retries == 2 and len(slept) == 2
    assert CourseOverview.objects.filter(catalog_status=CatalogStatus.OK).count() == 10
    # the failed page's courses say so (values kept: they had none)
    assert CourseOverview.objects.filter(catalog_status=CatalogStatus.ERROR).count() == 10


def test_sweep_retries_a_throttled_page_after_retry_after(wire, catalog_client):
    rows = CourseOverviewFactory.create_batch(5)
    wire.add(*(catalog_run(str(ov.id)) for ov in rows))
    answers = iter([(429, {"Retry-After": "7"}, '{"detail": "Request was throttled."}')])
    wire.before_list = lambda w: next(answers, None)
    slept = []
    result = sweep(catalog_client, page_size=10, sleep=slept.append)
    assert result.status == "complete" and result.courses_updated == 5
    assert slept and slept[0] >= 7


def test_sweep_is_immune_to_runs_inserted_between_page_requests(wire, catalog_client):
    rows = CourseOverviewFactory.create_batch(50)
    wire.add(*(catalog_run(str(ov.id)) for ov in rows))

    def insert_early_run(w):
        w.add(catalog_run(f"course-v1:AAA+inserted{w.list_requests}+1"))
        return None

    wire.before_list = insert_early_run
    result = sweep(catalog_client, page_size=7)
    assert result.status == "complete" and result.courses_updated == 50
    assert set(wire.requested_keys) == {str(ov.id) for ov in rows}
    assert set(wire.requested_keys.values()) == {1}


def test_a_dry_run_is_the_same_sweep_and_writes_nothing_at_all(wire, catalog_client):
    rows = CourseOverviewFactory.create_batch(25)
    wire.add(
        *(catalog_run(str(ov.id), marketing_url=f"https://new.example/{i}") for i, ov in enumerate(rows))
    )
    answers = iter([(503, {}, "down")])
    wire.before_list = lambda w: next(answers, None)
    slept = []
    before = list(CourseOverview.objects.order_by("id").values())
    result = dry_run(catalog_client, page_size=10, sleep=slept.append)
    assert result.completed and result.chunks_done == 3 and len(slept) == 1
    assert (result.counters["seen"], result.counters["updated"], result.counters["retries"]) == (25, 25, 1)
    # the token, the 503 and three pages
    assert result.counters["catalog_requests"] == 5
    assert {(c.course_key, c.field) for c in result.changes} >= {(str(ov.id), "marketing_url") for ov in rows}
    assert list(CourseOverview.objects.order_by("id").values()) == before  # no overview written
    assert not SweepRun.objects.exists()  # no sweep record, no lease


def test_a_dry_run_whose_page_keeps_failing_is_incomplete_and_writes_nothing(wire, catalog_client):
    CourseOverviewFactory.create_batch(5)
    wire.before_list = lambda w: (503, {}, "down")
    result = dry_run(catalog_client, page_size=10, attempts=2)
    assert not result.completed and "after 2 attempt(s)" in result.error
    assert result.counters["errored"] == 5 and result.counters["retries"] == 1
    assert not CourseOverview.objects.exclude(catalog_status=CatalogStatus.NEVER).exists()
    assert not CourseOverview.objects.filter(catalog_attempted_at__isnull=False).exists()
    assert not SweepRun.objects.exists()


def test_every_answered_row_is_stamped_checked_and_a_refused_one_only_attempted(wire, catalog_client):
    changed, unchanged, missing, refused = CourseOverviewFactory.create_batch(4)
    wire.add(catalog_run(str(changed.id)), catalog_run(str(unchanged.id)))
    wire.add(catalog_run(str(refused.id), content_language="en\n"))
    sync_overviews(_page(), catalog_client)
    del wire.runs[str(changed.id)]
    wire.add(catalog_run(str(changed.id), marketing_url="https://changed.example/x"))
    before = {ov.id: ov for ov in CourseOverview.objects.all()}

    counters = sync_overviews(_page(), catalog_client).counters
    assert (counters.updated, counters.unchanged, counters.missing, counters.refused) == (1, 1, 1, 1)
    after = {ov.id: ov for ov in CourseOverview.objects.all()}
    for row in (changed, unchanged, missing):
        assert after[row.id].catalog_checked_at > before[row.id].catalog_checked_at
    assert after[changed.id].catalog_synced_at == after[changed.id].catalog_checked_at
    # unchanged and missing: checked now, but last changed stays the first sweep's time
    assert after[unchanged.id].catalog_synced_at == before[unchanged.id].catalog_synced_at
    assert after[missing.id].catalog_synced_at == before[missing.id].catalog_synced_at
    # refused: the catalog answered, but nothing usable: not a check; the attempt is recorded
    assert after[refused.id].catalog_checked_at is None
    assert after[refused.id].catalog_attempted_at > before[refused.id].catalog_attempted_at
    assert after[refused.id].language is None and "content_language" in after[refused.id].catalog_error


def test_an_older_answer_never_overwrites_a_row_checked_after_it_was_sent(wire, catalog_client):
    """A per-course fetch that found nothing to change still wins over a slower bulk answer."""
    from datetime import timedelta

    from django.utils import timezone

    from catalog.sync import Fetched, apply_runs, read_rows

    ov = CourseOverviewFactory(marketing_url="https://new.example/x", catalog_status=CatalogStatus.OK)
    sent = timezone.now() - timedelta(seconds=5)
    # the row was checked (unchanged) after the bulk request below was sent; last changed is older
    CourseOverview.objects.filter(id=ov.id).update(
        catalog_synced_at=sent - timedelta(days=1), catalog_checked_at=sent + timedelta(seconds=1)
    )
    rows = read_rows(CourseOverview.objects.all())
    stale = {str(ov.id): catalog_run(str(ov.id), marketing_url="https://old.example/x")}
    fetched = Fetched({rows[0].id: rows[0].id}, stale, sent, timezone.now(), requests=1)
    counters = apply_runs(rows, fetched).counters
    assert (counters.superseded, counters.updated) == (1, 0)
    ov.refresh_from_db()
    assert ov.marketing_url == "https://new.example/x"
    assert ov.catalog_checked_at == sent + timedelta(seconds=1)


def test_the_catalogs_spelling_of_a_key_is_matched_without_regard_to_case(wire, catalog_client):
    """course-discovery matches ``keys=`` case-insensitively and answers with its own spelling."""
    import json as _json

    ov = CourseOverviewFactory(id=CourseKey.from_string("course-v1:MITx+Case6+2024"))
    run = catalog_run("course-v1:mitx+case6+2024", marketing_url="https://m.example/case")
    body = {"count": 1, "next": None, "previous": None, "results": [run]}
    wire.before_list = lambda w: (200, {"Content-Type": "application/json"}, _json.dumps(body))
    counters = sync_overviews(_page(), catalog_client).counters
    assert (counters.updated, counters.missing, counters.ignored) == (1, 0, 0)
    ov.refresh_from_db()
    assert ov.marketing_url == "https://m.example/case" and ov.catalog_status == CatalogStatus.OK


def test_overview_lookups_are_case_sensitive_on_every_database():
    CourseOverviewFactory(id=CourseKey.from_string("course-v1:MITx+Case+2024"))
    assert CourseOverview.objects.filter(id="course-v1:MITx+Case+2024").exists()
    assert not CourseOverview.objects.filter(id="course-v1:mitx+case+2024").exists()
    assert not CourseOverview.objects.filter(id__in=["course-v1:MITX+CASE+2024"]).exists()
    # two keys differing only in case are two rows (the import refuses to create such a pair)
    CourseOverviewFactory(id=CourseKey.from_string("course-v1:mitx+case+2024"))
    assert CourseOverview.objects.count() == 2


def test_a_failed_refresh_is_recorded_on_the_row_and_a_later_success_clears_it(wire, catalog_client):
    from catalog.refresh import record_failure, refresh_courses

    ov = CourseOverviewFactory()
    wire.add(catalog_run(str(ov.id), marketing_url="https://keep.example/x"))
    refresh_courses([ov.id], catalog_client)
    ov.refresh_from_db()
    synced, checked = ov.catalog_synced_at, ov.catalog_checked_at

    wire.before_list = lambda w: (503, {}, "<html>Service Unavailable</html>")
    # a caller that retries (the task) does not mark the row on a retryable error: only the attempt
    outcome = refresh_courses([ov.id], catalog_client)
    assert outcome.error is not None and outcome.error.retryable
    ov.refresh_from_db()
    assert ov.catalog_status == CatalogStatus.OK and ov.catalog_attempted_at > checked
    # ... and records it when it gives up
    assert record_failure([ov.id], outcome.error) == 1
    ov.refresh_from_db()
    assert ov.catalog_status == CatalogStatus.ERROR
    assert ov.catalog_error.startswith("CatalogServerError: ")
    assert (ov.marketing_url, ov.catalog_synced_at, ov.catalog_checked_at) == (
        "https://keep.example/x",
        synced,
        checked,
    )
    failed_at = ov.catalog_attempted_at

    wire.before_list = None
    counters = refresh_courses([ov.id], catalog_client).counters
    assert counters.updated == 1  # the status went back to ok: a change, written
    ov.refresh_from_db()
    assert (ov.catalog_status, ov.catalog_error) == (CatalogStatus.OK, "")
    assert ov.catalog_checked_at > failed_at and ov.catalog_synced_at > synced


def test_a_caller_that_does_not_retry_records_a_retryable_failure_at_once(wire, catalog_client):
    from catalog.refresh import refresh_courses

    ov = CourseOverviewFactory(marketing_url="https://keep.example/x", catalog_status=CatalogStatus.OK)
    wire.before_list = lambda w: (503, {}, "down")
    refresh_courses([ov.id], catalog_client, record_retryable_errors=True)
    ov.refresh_from_db()
    assert ov.catalog_status == CatalogStatus.ERROR and "CatalogServerError" in ov.catalog_error
    assert ov.marketing_url == "https://keep.example/x" and ov.catalog_attempted_at is not None


def test_a_failure_recorded_late_does_not_mark_a_row_checked_since(wire):
    from datetime import timedelta

    from django.utils import timezone

    from catalog.sync import record_failure

    started = timezone.now() - timedelta(minutes=5)
    fresh = CourseOverviewFactory(catalog_status=CatalogStatus.OK, catalog_checked_at=timezone.now())
    stale = CourseOverviewFactory(catalog_status=CatalogStatus.OK, catalog_checked_at=started)
    assert record_failure([fresh.id, stale.id], "CatalogTimeout: read timed out", started_at=started) == 1
    fresh.refresh_from_db()
    stale.refresh_from_db()
    assert fresh.catalog_status == CatalogStatus.OK and fresh.catalog_attempted_at is not None
    assert (stale.catalog_status, stale.catalog_error) == (
        CatalogStatus.ERROR,
        "CatalogTimeout: read timed out",
    )
