"""The sync core: given overviews, fetch their catalog runs in bulk, validate, compare, and write
only what changed -- a constant number of SQL queries per page of courses, never per course.

Rules (docs/architecture.md):
- a CCX course takes its master course's catalog data; each master is fetched once per page;
- a course the catalog does not know becomes ``catalog_status=missing``; its stored values stay;
- a refused (malformed or hostile) record is counted and logged; its stored values stay;
- an error never wipes stored data: a failed fetch raises before anything is written;
- the sync never creates overviews: runs the LMS does not have are counted and ignored.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ccx_keys.locator import CCXLocator
from django.db import connection, transaction
from django.db.models import Case, CharField, Q, QuerySet, Value, When
from django.db.models.functions import Cast
from django.utils import timezone
from opaque_keys.edx.keys import CourseKey

from catalog.mapping import FIELD_TABLE, RefusedRecord, map_course_run
from overviews.models import CATALOG_FIELDS, SYNC_FIELDS, CatalogStatus, CourseOverview

log = logging.getLogger("catalog.sync")

WRITE_FIELDS: tuple[str, ...] = CATALOG_FIELDS + SYNC_FIELDS
# What the sync reads of an overview row (never the content fields).
READ_FIELDS: tuple[str, ...] = ("id", *WRITE_FIELDS)
CCX_PREFIX = "ccx-v1:"


class CatalogSource(Protocol):
    """What the sync needs of a catalog client (``catalog_client.client.CatalogClient``)."""

    requests_made: int

    def get_course_runs(self, keys: Sequence[str]) -> dict[str, dict]: ...


@dataclass
class SyncCounters:
    """Counters of one sync (a page, a refresh or a chunk); ``+=`` adds them up. Its course
    counters are ``catalog.models.COURSE_COUNTERS`` (a test holds them equal), plus ``ignored``,
    which no sweep record keeps."""

    seen: int = 0
    updated: int = 0
    unchanged: int = 0
    missing: int = 0
    refused: int = 0
    errored: int = 0
    ignored: int = 0  # runs in a catalog answer that match no overview asked for
    superseded: int = 0  # rows left alone: a fresher per-course fetch wrote them meanwhile
    catalog_requests: int = 0

    def __iadd__(self, other: SyncCounters) -> SyncCounters:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)
        return self

    def as_line(self) -> str:
        return " ".join(f"{name}={value}" for name, value in asdict(self).items())


@dataclass(frozen=True)
class Change:
    course_key: str
    field: str
    old: Any
    new: Any


@dataclass
class PageResult:
    counters: SyncCounters
    changes: list[Change] = field(default_factory=list)


def catalog_key_for(course_key: CourseKey | str) -> str:
    """The key the catalog knows this course by: a CCX course's master, else itself.

    Takes a parsed key or a key string from our own table (already validated when it was
    written); only CCX keys are parsed, to find their master.
    """
    if isinstance(course_key, str):
        if not course_key.startswith(CCX_PREFIX):
            return course_key
        course_key = CourseKey.from_string(course_key)
    if isinstance(course_key, CCXLocator):
        return str(course_key.to_course_locator())
    return str(course_key)


@dataclass(slots=True)
class SyncRow:
    """What the sync reads and writes of an overview row, with its key as the stored string.

    The sweep reads rows this way: no model instances and no key parsing per row (parsing every
    key was the largest CPU cost of a 100,000-course sweep after the ORM itself).
    """

    id: str
    marketing_url: str | None
    eligible_for_financial_aid: bool
    language: str | None
    catalog_synced_at: datetime | None
    catalog_status: str
    catalog_error: str


def read_rows(queryset: QuerySet[CourseOverview]) -> list[SyncRow]:
    """The queryset's rows as ``SyncRow``s, in one query, keys as stored strings."""
    raw_id = Cast("id", output_field=CharField())
    return [SyncRow(*values) for values in queryset.values_list(raw_id, *WRITE_FIELDS)]


def _apply(overview: CourseOverview | SyncRow, values: dict[str, Any], changes: list[Change]) -> bool:
    changed = False
    for name, new in values.items():
        old = getattr(overview, name)
        if old != new:
            changes.append(Change(str(overview.id), name, old, new))
            setattr(overview, name, new)
            changed = True
    return changed


def sync_overviews(
    overviews: Sequence[CourseOverview | SyncRow],
    client: CatalogSource,
    *,
    dry_run: bool = False,
) -> PageResult:
    """Bring these overviews up to date with the catalog, in one bulk fetch and one bulk write.

    Two times are kept apart: ``catalog_synced_at`` ("last changed") is stamped on rows whose
    values were written, ``catalog_checked_at`` ("last checked") on every row the catalog answered
    for, changed or not (``missing`` included; a refused record is not a check). Both are the
    moment the catalog's answer was received. Fresher data wins: a row stamped either way after
    this fetch was *sent* (another fetch -- a per-course one during a sweep -- completed meanwhile)
    is left alone, and counted as ``superseded`` if it would have changed. So a chunk never
    overwrites a course whose per-course fetch completed after the chunk's answer arrived, nor one
    whose fetch started after the chunk's and finished first -- even when that fetch found nothing
    to change. Raises ``CatalogError`` (typed, see ``catalog_client.errors``) when the fetch fails;
    nothing has been written then. No transaction is held across the HTTP request: each write is
    one guarded statement per batch, atomic by itself.
    """
    return apply_runs(overviews, fetch_runs(overviews, client), dry_run=dry_run)


@dataclass
class Fetched:
    """A catalog answer for some overviews, and when it was asked for and received."""

    wanted: dict[Any, str]  # overview key -> the catalog key it takes its data from
    runs: dict[str, dict]
    sent_at: datetime
    received_at: datetime
    requests: int
    throttled: int = 0  # 429 answers met on the way


def fetch_runs(overviews: Sequence[CourseOverview | SyncRow], client: CatalogSource) -> Fetched:
    """The network half of a sync: one bulk fetch (no database access, so it may run in another
    thread while this thread writes the previous page). Raises ``CatalogError``."""
    wanted = {ov.id: catalog_key_for(ov.id) for ov in overviews}
    requests_before = client.requests_made
    throttled_before = getattr(client, "throttled_responses", 0)
    sent_at = timezone.now()
    runs = client.get_course_runs(sorted(set(wanted.values()))) if wanted else {}
    return Fetched(
        wanted,
        runs,
        sent_at,
        timezone.now(),
        requests=client.requests_made - requests_before,
        throttled=getattr(client, "throttled_responses", 0) - throttled_before,
    )


def apply_runs(
    overviews: Sequence[CourseOverview | SyncRow],
    fetched: Fetched,
    *,
    dry_run: bool = False,
) -> PageResult:
    """The database half of a sync: validate, compare and write what changed (see
    ``sync_overviews``)."""
    result = PageResult(SyncCounters(seen=len(overviews), catalog_requests=fetched.requests))
    if not overviews:
        return result
    counters = result.counters
    wanted, sent_at, received_at = fetched.wanted, fetched.sent_at, fetched.received_at
    # The catalog matches keys without regard to case and answers with its own spelling.
    by_lower = {key.lower(): run for key, run in fetched.runs.items()}
    runs = {
        key: run
        for key in set(wanted.values())
        if (run := fetched.runs.get(key) or by_lower.get(key.lower()))
    }
    counters.ignored = len(by_lower) - len(runs)

    mapped: dict[str, dict[str, Any] | RefusedRecord | None] = {}

    def mapping_of(catalog_key: str) -> dict[str, Any] | RefusedRecord | None:
        """The run's overview values (validated once per catalog key), its refusal, or None."""
        if catalog_key not in mapped:
            run = runs.get(catalog_key)
            if run is None:
                mapped[catalog_key] = None
            else:
                try:
                    mapped[catalog_key] = map_course_run(run)
                except RefusedRecord as exc:
                    mapped[catalog_key] = exc
                    log.warning("catalog sync: refused catalog record %s: %s", catalog_key, exc)
        return mapped[catalog_key]

    # Every row of the page is answered for: changed, unchanged, missing or refused. All go to one
    # guarded write, which stamps "last checked" on the answered ones and writes values only where
    # something changed (``Stamp.changed``).
    stamps: list[Stamp] = []
    for overview in overviews:
        if _same_as_stored(overview, runs.get(wanted[overview.id])):
            counters.unchanged += 1  # exactly the values stored, which were validated then
            stamps.append(Stamp(overview, changed=False, checked=True))
            continue
        values = mapping_of(wanted[overview.id])
        if values is None:
            counters.missing += 1
            meta = {"catalog_status": CatalogStatus.MISSING, "catalog_error": ""}
        elif isinstance(values, RefusedRecord):
            counters.refused += 1
            meta = {
                "catalog_status": CatalogStatus.ERROR,
                "catalog_error": f"catalog record refused: {values}",
            }
        else:
            meta = {"catalog_status": CatalogStatus.OK, "catalog_error": ""}
            meta.update(values)
        usable = values is not None and not isinstance(values, RefusedRecord)
        changed = _apply(overview, meta, result.changes)
        if changed:
            counters.updated += usable
        else:
            counters.unchanged += usable
        # A refused record is an answer we could not use: the row is not "checked" by it.
        stamps.append(Stamp(overview, changed=changed, checked=not isinstance(values, RefusedRecord)))

    if not dry_run:
        for stamp in stamps:
            if stamp.changed:
                stamp.row.catalog_synced_at = received_at
        superseded = guarded_bulk_update(stamps, sent_at=sent_at, received_at=received_at)
        if superseded:
            counters.superseded += len(superseded)
            counters.updated -= sum(1 for s in superseded if s.row.catalog_status == CatalogStatus.OK)
            log.info("catalog sync: %d row(s) kept their fresher per-course data", len(superseded))
    return result


_SAME_FIELDS = tuple((field.catalog_key, field.model_field) for field in FIELD_TABLE)
_ABSENT = object()


def _same_as_stored(row: CourseOverview | SyncRow, run: dict[str, Any] | None) -> bool:
    """The fast path of a sweep with nothing to change: the run's raw values are exactly (same
    type, same value) the row's stored ones, and the row is ``ok``. Stored values came out of the
    mapping, so such a run maps to them too; validating it again would change nothing. Anything
    else takes the mapping (which also refuses what it must)."""
    if run is None or row.catalog_status != CatalogStatus.OK or row.catalog_error:
        return False
    for catalog_key, model_field in _SAME_FIELDS:
        value = run.get(catalog_key, _ABSENT)
        stored = getattr(row, model_field)
        if type(value) is not type(stored) or value != stored:
            return False
    return True


@dataclass(slots=True)
class Stamp:
    """One row of a guarded write: its new values, whether they differ from the stored ones, and
    whether the catalog's answer counts as a check of it."""

    row: CourseOverview | SyncRow
    changed: bool = True
    checked: bool = True


def guarded_bulk_update(stamps: Sequence[Stamp], *, sent_at: datetime, received_at: datetime) -> list[Stamp]:
    """Write one page's answer, leaving alone every row a fresher fetch wrote or checked meanwhile.

    Per row: the sync fields when ``changed`` (``catalog_synced_at``, "last changed", is already
    set on the row); ``catalog_checked_at = received_at`` when ``checked``; and
    ``catalog_attempted_at`` moved forward to ``sent_at``. A row whose ``catalog_synced_at`` or
    ``catalog_checked_at`` is after ``sent_at`` is skipped whole: another fetch, sent later or
    answered later, got there first. The guard sits in the UPDATE's own WHERE clause, so it holds
    under concurrency (the database re-checks it on the row it locks).

    On PostgreSQL and SQLite (3.35+) this is one ``UPDATE ... FROM (VALUES ...) RETURNING`` per
    batch of rows -- a page is one query, and building it costs microseconds a row, where Django's
    ``bulk_update`` (CASE WHEN per field and row) costs most of a millisecond. Other databases get
    ``bulk_update``-style queries. Returns the changed rows that were *not* written (superseded).
    """
    if not stamps:
        return []
    if connection.vendor == "postgresql" or (
        connection.vendor == "sqlite" and sqlite3.sqlite_version_info >= (3, 35)
    ):
        written = _update_from_values(stamps, sent_at, received_at)
    else:
        written = _update_with_case(stamps, sent_at, received_at)
    return [s for s in stamps if s.changed and str(s.row.id) not in written]


_FIELDS = [CourseOverview._meta.get_field(name) for name in ("id", *WRITE_FIELDS)]
_PG_CASTS = {
    "id": "varchar",
    "marketing_url": "varchar",
    "eligible_for_financial_aid": "boolean",
    "language": "varchar",
    "catalog_synced_at": "timestamptz",
    "catalog_status": "varchar",
    "catalog_error": "text",
}
_FLAGS = ("write_values", "stamp_checked")  # two more boolean columns in the VALUES list


def sqlite_parameter_limit() -> int:
    """The bound parameters one SQLite statement may hold: 32,766 since 3.32, 999 before (Python
    3.11+ can ask the connection)."""
    connection.ensure_connection()
    try:
        return connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    except AttributeError:
        return 999


def _rows_per_query(per_row: int = len(_FIELDS) + len(_FLAGS), fixed: int = 8) -> int:
    """Rows per statement: ``per_row`` bound parameters a row, plus ``fixed`` for the statement,
    stay under the database's limit."""
    if connection.vendor != "sqlite":
        return 2000
    return max(1, min(2000, (sqlite_parameter_limit() - fixed) // per_row))


def _values_source(names: Sequence[str], pg_casts: Sequence[str]) -> tuple[str, str, dict[str, str]]:
    """For ``UPDATE ... FROM (VALUES ...) AS source``: one row's placeholders, the source's alias,
    and each named column as SQL. PostgreSQL types every placeholder (``pg_casts``) and takes
    column names; SQLite names the VALUES columns column1, column2, ..."""
    quote = connection.ops.quote_name
    if connection.vendor == "postgresql":
        row_sql = "(" + ", ".join(f"%s::{cast}" for cast in pg_casts) + ")"
        return row_sql, "v(" + ", ".join(quote(n) for n in names) + ")", {n: f"v.{quote(n)}" for n in names}
    row_sql = "(" + ", ".join("%s" for _ in names) + ")"
    return row_sql, "v", {n: f"v.column{i + 1}" for i, n in enumerate(names)}


def _attempted_forward(table: str) -> str:
    """The SET clause that moves ``catalog_attempted_at`` forward to a parameter, never back (the
    parameter twice)."""
    attempted = connection.ops.quote_name("catalog_attempted_at")
    return (
        f"{attempted} = CASE WHEN {table}.{attempted} IS NULL OR {table}.{attempted} < %s "
        f"THEN %s ELSE {table}.{attempted} END"
    )


def _update_from_values(stamps: Sequence[Stamp], sent_at: datetime, received_at: datetime) -> set[str]:
    """The guarded write on PostgreSQL and SQLite 3.35+. Returns the keys of the rows written
    among those with values to write (rows only checked are stamped, not reported)."""
    table = connection.ops.quote_name(CourseOverview._meta.db_table)
    quote = connection.ops.quote_name
    columns = [field.column for field in _FIELDS]
    row_sql, source, value_of = _values_source(
        (*columns, *_FLAGS), (*(_PG_CASTS[c] for c in columns), "boolean", "boolean")
    )
    write, check = value_of["write_values"], value_of["stamp_checked"]
    synced, checked = quote("catalog_synced_at"), quote("catalog_checked_at")
    assignments = ", ".join(
        [
            *(
                f"{quote(c)} = CASE WHEN {write} THEN {value_of[c]} ELSE {table}.{quote(c)} END"
                for c in columns[1:]
            ),
            f"{checked} = CASE WHEN {check} THEN %s ELSE {table}.{checked} END",
            _attempted_forward(table),
        ]
    )
    adapt = connection.ops.adapt_datetimefield_value
    sent, received = adapt(sent_at), adapt(received_at)
    guard = (
        f"AND ({table}.{synced} IS NULL OR {table}.{synced} <= %s) "
        f"AND ({table}.{checked} IS NULL OR {table}.{checked} <= %s)"
    )
    # One statement per batch. Rows only checked (nothing to write: most rows of most sweeps) carry
    # no values: a page of them alone is one narrow UPDATE by id, and beside changed rows they are
    # sent with NULLs (their flags say not to write). Only changed rows can be superseded: the
    # narrow statement reports no ids.
    only_checked = all(stamp.checked and not stamp.changed for stamp in stamps)
    nulls = (None,) * (len(_FIELDS) - 1)
    written: set[str] = set()
    step = _rows_per_query()
    with connection.cursor() as cursor:
        if only_checked:
            id_step = step * (len(_FIELDS) + len(_FLAGS))
            for start in range(0, len(stamps), id_step):
                ids = [str(stamp.row.id) for stamp in stamps[start : start + id_step]]
                sql = (
                    f"UPDATE {table} SET {checked} = %s, {_attempted_forward(table)} "  # noqa: S608
                    f"WHERE {table}.{quote('id')} IN ({', '.join(['%s'] * len(ids))}) {guard}"
                )
                cursor.execute(sql, [received, sent, sent, *ids, sent, sent])
            return written
        for start in range(0, len(stamps), step):
            batch = stamps[start : start + step]
            params: list[Any] = [received, sent, sent]
            for stamp in batch:
                row = stamp.row
                params.append(str(row.id))  # stored form of the key; parsing it again costs more
                if stamp.changed:
                    params.extend(
                        field.get_db_prep_save(getattr(row, field.attname), connection)
                        for field in _FIELDS[1:]
                    )
                else:
                    params.extend(nulls)
                params.extend((stamp.changed, stamp.checked))
            # Only quoted identifiers and placeholders are interpolated; every value is a parameter.
            values = ", ".join([row_sql] * len(batch))
            sql = (
                f"UPDATE {table} SET {assignments} FROM (VALUES {values}) AS {source} "  # noqa: S608
                f"WHERE {table}.{quote('id')} = {value_of['id']} {guard} "
                f"RETURNING {table}.{quote('id')}"
            )
            cursor.execute(sql, [*params, sent, sent])
            written.update(str(key) for (key,) in cursor.fetchall())
    return written


@dataclass
class ListedWrite:
    """What one write of listed runs did: rows written with a usable record (checked), how many of
    those changed, and the rows written with a refusal (not a check)."""

    checked: int = 0
    changed: int = 0
    refused: set[str] = field(default_factory=set)


def write_listed_runs(
    targets: Sequence[tuple[str, dict[str, Any] | RefusedRecord]],
    *,
    sent_at: datetime,
    received_at: datetime,
    not_checked_since: datetime,
) -> ListedWrite:
    """Write catalog answers onto the rows that exist among ``targets`` (overview key, mapped values
    or the record's refusal), comparing in the database: no SELECT first. The walk's write, where
    the page names runs the LMS may not have.

    One ``UPDATE ... FROM (VALUES ...) RETURNING`` per batch (PostgreSQL, SQLite 3.35+). Per row,
    as ``apply_runs`` and ``guarded_bulk_update`` do: values and ``catalog_status=ok`` for a usable
    record, ``catalog_status=error`` and the refusal (values kept) for a refused one;
    ``catalog_synced_at`` moves to ``received_at`` only where something differs (every SET
    expression reads the row as it was), ``catalog_checked_at`` on usable records only,
    ``catalog_attempted_at`` forward to ``sent_at``. Only rows not checked since
    ``not_checked_since`` are touched (a walk's own repeats, and rows a fresher fetch checked), under
    the same fresher-data guard. A written row whose "last changed" is now ``received_at`` changed;
    one whose status is now ``error`` was refused (the only ids sent back: a page's worth of ids
    costs more to return than to write).
    """
    written = ListedWrite()
    if not targets:
        return written
    if not (connection.vendor == "postgresql" or sqlite3.sqlite_version_info >= (3, 35)):
        raise NotImplementedError("write_listed_runs needs PostgreSQL or SQLite 3.35+")
    table = connection.ops.quote_name(CourseOverview._meta.db_table)
    quote = connection.ops.quote_name
    url, aid, lang, synced, status, error = (
        quote(c) for c in ("marketing_url", "eligible_for_financial_aid", "language", *SYNC_FIELDS)
    )
    checked = quote("catalog_checked_at")
    names = ("id", "url", "aid", "lang", "status", "error", "refused")
    row_sql, source, v = _values_source(
        names, ("varchar", "varchar", "boolean", "varchar", "varchar", "text", "boolean")
    )
    differs = "IS DISTINCT FROM" if connection.vendor == "postgresql" else "IS NOT"
    changed = (
        f"({table}.{status} {differs} {v['status']} OR {table}.{error} {differs} {v['error']} "
        f"OR (NOT {v['refused']} AND ({table}.{url} {differs} {v['url']} "
        f"OR {table}.{aid} {differs} {v['aid']} OR {table}.{lang} {differs} {v['lang']})))"
    )
    assignments = ", ".join(
        [
            *(
                f"{column} = CASE WHEN {v['refused']} THEN {table}.{column} ELSE {v[name]} END"
                for column, name in ((url, "url"), (aid, "aid"), (lang, "lang"))
            ),
            f"{status} = {v['status']}",
            f"{error} = {v['error']}",
            f"{synced} = CASE WHEN {changed} THEN %s ELSE {table}.{synced} END",
            f"{checked} = CASE WHEN {v['refused']} THEN {table}.{checked} ELSE %s END",
            _attempted_forward(table),
        ]
    )
    adapt = connection.ops.adapt_datetimefield_value
    sent, received, since = adapt(sent_at), adapt(received_at), adapt(not_checked_since)
    step = _rows_per_query(per_row=len(names), fixed=16)
    with connection.cursor() as cursor:
        for start in range(0, len(targets), step):
            batch = targets[start : start + step]
            params: list[Any] = [received, received, sent, sent]
            for key, values in batch:
                if isinstance(values, RefusedRecord):
                    text = f"catalog record refused: {values}"[:2000]
                    params.extend((key, None, False, None, CatalogStatus.ERROR, text, True))
                else:
                    params.extend(
                        (
                            key,
                            values["marketing_url"],
                            values["eligible_for_financial_aid"],
                            values["language"],
                            CatalogStatus.OK,
                            "",
                            False,
                        )
                    )
            # Only quoted identifiers and placeholders are interpolated; every value is a parameter.
            sql = (
                f"UPDATE {table} SET {assignments} "  # noqa: S608
                f"FROM (VALUES {', '.join([row_sql] * len(batch))}) AS {source} "
                f"WHERE {table}.{quote('id')} = {v['id']} "
                f"AND ({table}.{checked} IS NULL OR {table}.{checked} < %s) "
                f"AND ({table}.{synced} IS NULL OR {table}.{synced} <= %s) "
                f"RETURNING CASE WHEN {table}.{status} = %s THEN {table}.{quote('id')} END, "
                f"CASE WHEN {table}.{synced} = %s THEN 1 ELSE 0 END"
            )
            cursor.execute(sql, [*params, since, sent, CatalogStatus.ERROR, received])
            for refused_key, was_changed in cursor.fetchall():
                if refused_key is not None:
                    written.refused.add(str(refused_key))
                else:
                    written.checked += 1
                    written.changed += was_changed
    return written


def _update_with_case(stamps: Sequence[Stamp], sent_at: datetime, received_at: datetime) -> set[str]:
    """The portable path: the same guarded writes through the ORM, a few queries per batch."""
    fields = _FIELDS[1:]
    not_fresher = (Q(catalog_synced_at__isnull=True) | Q(catalog_synced_at__lte=sent_at)) & (
        Q(catalog_checked_at__isnull=True) | Q(catalog_checked_at__lte=sent_at)
    )
    with transaction.atomic():
        candidates = CourseOverview.objects.filter(pk__in=[s.row.id for s in stamps]).filter(not_fresher)
        written = {str(key) for key in candidates.select_for_update().values_list("pk", flat=True)}
        rows = [s.row for s in stamps if s.changed and str(s.row.id) in written]
        batch = connection.ops.bulk_batch_size(["pk", "pk", *fields], rows) or 1
        for start in range(0, len(rows), batch):
            part = rows[start : start + batch]
            CourseOverview.objects.filter(pk__in=[row.id for row in part]).update(
                **{
                    field.attname: Case(
                        *(
                            When(pk=row.id, then=Value(getattr(row, field.attname), output_field=field))
                            for row in part
                        ),
                        output_field=field,
                    )
                    for field in fields
                }
            )
        checked_ids = [s.row.id for s in stamps if s.checked and str(s.row.id) in written]
        CourseOverview.objects.filter(pk__in=checked_ids).update(catalog_checked_at=received_at)
        CourseOverview.objects.filter(pk__in=[s.row.id for s in stamps]).filter(
            Q(catalog_attempted_at__isnull=True) | Q(catalog_attempted_at__lt=sent_at)
        ).update(catalog_attempted_at=sent_at)
    return written


def failure_text(exc: BaseException) -> str:
    """What a failed fetch records in ``catalog_error``: ``"<ErrorType>: message"``."""
    return f"{type(exc).__name__}: {exc}"


def record_failure(
    keys: Sequence[CourseKey | str],
    error: str | BaseException,
    *,
    started_at: datetime | None = None,
) -> int:
    """Record on these rows that a fetch of them failed: ``catalog_status=error``, the error text
    (``"<ErrorType>: message"``; an exception is formatted so) and ``catalog_attempted_at``.
    Their catalog-owned values and "last changed" / "last checked" times are kept, so the row
    still says when it was last right.

    ``started_at``: when the failed fetch was first tried. A row another fetch checked after that
    (a sweep chunk that succeeded meanwhile) keeps its status: it is fresher than this failure.
    Lookups are exact (keys are case-sensitive). Returns the number of rows marked as failed.
    """
    rows = CourseOverview.objects.filter(id__in=[str(key) for key in keys])
    with transaction.atomic():
        record_attempt(keys)
        if started_at is not None:
            rows = rows.filter(Q(catalog_checked_at__isnull=True) | Q(catalog_checked_at__lte=started_at))
        text = error if isinstance(error, str) else failure_text(error)
        return rows.update(catalog_status=CatalogStatus.ERROR, catalog_error=text[:2000])


def record_attempt(keys: Sequence[CourseKey | str]) -> int:
    """Stamp ``catalog_attempted_at`` (never moved backwards) on these rows: a fetch was tried."""
    now = timezone.now()
    return (
        CourseOverview.objects.filter(id__in=[str(key) for key in keys])
        .filter(Q(catalog_attempted_at__isnull=True) | Q(catalog_attempted_at__lt=now))
        .update(catalog_attempted_at=now)
    )
