"""Edges of the sync core that ``make mutation`` found unpinned.

The guarded write has two implementations: one ``UPDATE ... FROM (VALUES ...)`` per batch
(PostgreSQL, SQLite 3.35+) and a portable ORM path for any other database. The unit tests run on
SQLite, so only the first would be exercised: here both are run on the same rows and must leave
the same table and report the same rows written.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import responses
from django.utils import timezone
from opaque_keys.edx.keys import CourseKey

from catalog import sync
from catalog.sync import Stamp, SyncCounters, catalog_key_for, read_rows
from overviews.models import CatalogStatus, CourseOverview
from tests.factories import CourseOverviewFactory, catalog_run
from tests.wire import WireCatalog

pytestmark = pytest.mark.django_db


@pytest.fixture
def wire(catalog_settings):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield WireCatalog(rsps)


FIELDS = (
    "marketing_url",
    "eligible_for_financial_aid",
    "language",
    "catalog_synced_at",
    "catalog_status",
    "catalog_error",
    "catalog_checked_at",
    "catalog_attempted_at",
)


def _scenario():
    """Five rows and what one catalog answer (sent at ``sent``, received at ``received``) does
    to each: changed, unchanged, refused (not a check), fresher (written after ``sent``: left
    alone whole), attempted later than ``sent`` (its attempt time is not moved back)."""
    now = timezone.now()
    sent, received = now - timedelta(seconds=10), now - timedelta(seconds=5)
    before, after = sent - timedelta(hours=1), sent + timedelta(seconds=1)
    keys = [f"course-v1:Edge+E{i}+2024" for i in range(5)]
    for i, key in enumerate(keys):
        CourseOverviewFactory(
            id=CourseKey.from_string(key),
            marketing_url=f"https://old.example/{i}",
            catalog_synced_at=after if i == 3 else before,
            catalog_checked_at=None if i == 1 else before,  # row 1: never checked yet
            catalog_attempted_at=after if i == 4 else before,
            catalog_status=CatalogStatus.OK,
        )
    rows = {row.id: row for row in read_rows(CourseOverview.objects.all())}
    changed = rows[keys[0]]
    changed.marketing_url, changed.catalog_synced_at = "https://new.example/0", received
    refused = rows[keys[2]]
    refused.catalog_status, refused.catalog_error = CatalogStatus.ERROR, "catalog record refused: x"
    fresher = rows[keys[3]]
    fresher.marketing_url, fresher.catalog_synced_at = "https://stale.example/3", received
    stamps = [
        Stamp(changed, changed=True, checked=True),
        Stamp(rows[keys[1]], changed=False, checked=True),
        Stamp(refused, changed=True, checked=False),
        Stamp(fresher, changed=True, checked=True),
        Stamp(rows[keys[4]], changed=False, checked=True),
    ]
    return keys, stamps, sent, received, before, after


def _table():
    return {str(k): v for k, *v in CourseOverview.objects.order_by("id").values_list("id", *FIELDS)}


@pytest.mark.parametrize("path", ["_update_from_values", "_update_with_case"])
def test_both_write_paths_leave_the_same_table(path):
    keys, stamps, sent, received, before, after = _scenario()
    written = getattr(sync, path)(stamps, sent, received)
    # the changed rows written, not the fresher one (rows only checked need not be reported)
    changed = {str(stamp.row.id) for stamp in stamps if stamp.changed}
    assert written & changed == {keys[0], keys[1], keys[2], keys[4]} & changed
    table = _table()
    url, _aid, _lang, synced, status, error, checked, attempted = range(8)
    # changed: new values, last changed and last checked = received, attempted = sent
    assert table[keys[0]][url] == "https://new.example/0"
    assert (table[keys[0]][synced], table[keys[0]][checked], table[keys[0]][attempted]) == (
        received,
        received,
        sent,
    )
    # unchanged: values and last changed kept, checked now
    assert table[keys[1]][url] == "https://old.example/1" and table[keys[1]][synced] == before
    assert table[keys[1]][checked] == received and table[keys[1]][attempted] == sent
    # refused: the error recorded, values kept, not a check
    assert table[keys[2]][status] == CatalogStatus.ERROR and table[keys[2]][error].startswith(
        "catalog record"
    )
    assert table[keys[2]][url] == "https://old.example/2" and table[keys[2]][checked] == before
    # fresher: nothing of this answer written, not even the attempt
    assert table[keys[3]][url] == "https://old.example/3"
    assert (table[keys[3]][synced], table[keys[3]][checked]) == (after, before)
    # attempted after this fetch was sent: not moved back
    assert table[keys[4]][attempted] == after and table[keys[4]][checked] == received


def test_the_portable_path_is_used_on_other_databases(monkeypatch):
    keys, stamps, sent, received, *_ = _scenario()
    calls = []
    monkeypatch.setattr(sync.connection, "vendor", "mysql")
    monkeypatch.setattr(sync, "_update_with_case", lambda *a: calls.append(a) or {keys[0]})
    superseded = sync.guarded_bulk_update(stamps, sent_at=sent, received_at=received)
    assert len(calls) == 1
    # every changed row not written is reported superseded; unchanged ones never are
    assert [str(s.row.id) for s in superseded] == [keys[2], keys[3]]


def test_an_empty_page_writes_nothing():
    assert sync.guarded_bulk_update([], sent_at=timezone.now(), received_at=timezone.now()) == []


def test_catalog_keys_of_ccx_courses_are_their_masters():
    master = "course-v1:MITx+6.002x+2024"
    ccx = "ccx-v1:MITx+6.002x+2024+ccx@7"
    assert catalog_key_for(ccx) == master
    assert catalog_key_for(CourseKey.from_string(ccx)) == master
    assert catalog_key_for(master) == master
    assert catalog_key_for(CourseKey.from_string(master)) == master


def test_counters_add_up_and_print_every_field_in_one_line():
    total = SyncCounters(seen=2, updated=1, catalog_requests=1)
    total += SyncCounters(seen=3, unchanged=2, missing=1, catalog_requests=2, superseded=1)
    assert (total.seen, total.updated, total.unchanged, total.missing, total.catalog_requests) == (
        5,
        1,
        2,
        1,
        3,
    )
    assert total.as_line() == (
        "seen=5 updated=1 unchanged=2 missing=1 refused=0 errored=0 ignored=0 superseded=1 catalog_requests=3"
    )


# -- which write path, and how many rows a statement carries -----------------------------------


@pytest.mark.parametrize(
    ("vendor", "version", "path"),
    [
        ("postgresql", (3, 0, 0), "_update_from_values"),
        ("sqlite", (3, 35, 0), "_update_from_values"),
        ("sqlite", (3, 34, 1), "_update_with_case"),
        ("mysql", (3, 45, 0), "_update_with_case"),
    ],
)
def test_the_write_path_follows_the_database(monkeypatch, vendor, version, path):
    """UPDATE ... FROM (VALUES ...) RETURNING needs PostgreSQL or SQLite 3.35; anything else
    takes the portable path."""
    keys, stamps, sent, received, *_ = _scenario()
    calls = []
    monkeypatch.setattr(sync.connection, "vendor", vendor)
    monkeypatch.setattr(sync.sqlite3, "sqlite_version_info", version)
    for name in ("_update_from_values", "_update_with_case"):
        monkeypatch.setattr(sync, name, lambda *args, name=name: calls.append((name, args)) or set(keys))
    assert sync.guarded_bulk_update(stamps, sent_at=sent, received_at=received) == []
    assert [(name, args) for name, args in calls] == [(path, (stamps, sent, received))]


@pytest.mark.skipif(
    __import__("django.db").db.connection.vendor != "sqlite",
    reason="SQLite's bound-parameter limit; other databases take 2,000 rows (the next test)",
)
def test_a_page_larger_than_the_databases_parameter_limit_is_written_in_several_statements():
    """SQLite refuses a statement with more bound parameters than its limit: the write splits the
    page so that every statement fits, and every row is still written."""
    from django.db import connection

    CourseOverviewFactory.create_batch(45)
    rows = read_rows(CourseOverview.objects.order_by("id"))
    for row in rows:
        row.marketing_url = "https://batched.example/" + row.id
    connection.ensure_connection()
    limit = connection.connection.getlimit(sync.sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    connection.connection.setlimit(sync.sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 200)
    try:
        per_statement = sync._rows_per_query()
        now = timezone.now()
        written = sync._update_from_values([Stamp(row) for row in rows], now, now)
    finally:
        connection.connection.setlimit(sync.sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)
    assert 1 < per_statement < 45
    assert written == {row.id for row in rows}
    assert set(CourseOverview.objects.values_list("marketing_url", flat=True)) == {
        "https://batched.example/" + row.id for row in rows
    }


def test_other_databases_take_pages_of_up_to_2000_rows(monkeypatch):
    monkeypatch.setattr(sync.connection, "vendor", "postgresql")
    assert sync._rows_per_query() == 2000


# -- what a sync reports and records -------------------------------------------------------------


def test_a_dry_run_reports_the_stored_value_it_would_replace(wire, catalog_client):
    ov = CourseOverviewFactory(marketing_url="https://old.example/x")
    wire.add(catalog_run(str(ov.id), marketing_url="https://new.example/x"))
    result = sync.sync_overviews([ov], catalog_client, dry_run=True)
    assert sync.Change(str(ov.id), "marketing_url", "https://old.example/x", "https://new.example/x") in (
        result.changes
    )
    ov.refresh_from_db()
    assert ov.marketing_url == "https://old.example/x"


def test_a_sync_counts_the_catalog_requests_it_made(wire, catalog_client):
    ov = CourseOverviewFactory()
    wire.add(catalog_run(str(ov.id)))
    first = sync.sync_overviews([ov], catalog_client).counters
    second = sync.sync_overviews([ov], catalog_client).counters
    assert (first.catalog_requests, second.catalog_requests) == (2, 1)  # the token once, then a page


def test_a_recorded_failure_keeps_at_most_2000_characters_of_the_error():
    ov = CourseOverviewFactory()
    assert sync.record_failure([str(ov.id)], "E" * 5000) == 1
    ov.refresh_from_db()
    assert ov.catalog_status == CatalogStatus.ERROR and ov.catalog_error == "E" * 2000


def test_every_missing_and_refused_course_of_a_page_is_counted_and_missing_clears_the_error(
    wire, catalog_client
):
    rows = CourseOverviewFactory.create_batch(
        5, catalog_status=CatalogStatus.ERROR, catalog_error="old failure"
    )
    wire.add(catalog_run(str(rows[0].id)))
    wire.add(*(catalog_run(str(ov.id), marketing_url="javascript:alert(1)") for ov in rows[1:3]))
    counters = sync.sync_overviews(rows, catalog_client).counters  # rows 3 and 4: unknown to the catalog
    assert (counters.seen, counters.updated, counters.refused, counters.missing) == (5, 1, 2, 2)
    stored = {
        str(k): (s, e)
        for k, s, e in CourseOverview.objects.values_list("id", "catalog_status", "catalog_error")
    }
    assert stored[str(rows[3].id)] == stored[str(rows[4].id)] == (CatalogStatus.MISSING, "")


class _BareSource:
    """The least a catalog source has (``catalog.sync.CatalogSource``): no 429 counter."""

    def __init__(self, runs):
        self.runs, self.requests_made = runs, 0

    def get_course_runs(self, keys):
        self.requests_made += 1
        return {key: self.runs[key] for key in keys if key in self.runs}


def test_a_source_without_a_429_counter_counts_no_429s():
    ov = CourseOverviewFactory()
    fetched = sync.fetch_runs([ov], _BareSource({str(ov.id): catalog_run(str(ov.id))}))
    assert (fetched.requests, fetched.throttled) == (1, 0)
