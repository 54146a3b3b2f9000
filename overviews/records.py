"""Validating LMS course records (import files, publish payloads) at the edge.

Every field is checked against its column: a value the database would truncate, reject or store
differently (a 300-character ``org`` in a 255-character column, which SQLite would keep; a NUL,
which PostgreSQL refuses mid-write; an impossible date) is an ``InvalidRecord`` naming the field,
so a bad file is refused before anything is written.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.db import models
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from opaque_keys import InvalidKeyError
from opaque_keys.edx.keys import CourseKey

from overviews.keys import parse_course_key
from overviews.models import CATALOG_FIELDS, CHECK_FIELDS, CONTENT_FIELDS, SYNC_FIELDS, CourseOverview

_MAX_TEXT = 10_000  # TextFields have no column limit; a course record has no reason to be larger

# Fields a record may carry that the import knowingly does not write: the catalog's own fields and
# the sync metadata (dump_overviews prints them, so a dump can be imported back).
IGNORED_FIELDS: frozenset[str] = frozenset(
    {"id", *CATALOG_FIELDS, *SYNC_FIELDS, *CHECK_FIELDS, "created", "modified"}
)


class InvalidRecord(ValueError):
    pass


def _field_kinds() -> dict[str, tuple[str, int]]:
    """``name -> (kind, max length)`` for every content field, read from the model."""
    kinds: dict[str, tuple[str, int]] = {}
    for name in CONTENT_FIELDS:
        field = CourseOverview._meta.get_field(name)
        if isinstance(field, models.DateTimeField):
            kinds[name] = ("datetime", 0)
        elif isinstance(field, models.BooleanField):
            kinds[name] = ("bool", 0)
        else:
            kinds[name] = ("text", field.max_length or _MAX_TEXT)
    return kinds


_KINDS = _field_kinds()


def _clean_datetime(name: str, value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidRecord(f"{name} is not an ISO 8601 date-time: {value!r:.60}")
    try:
        parsed = parse_datetime(value)  # ValueError on a well-formed impossible date (2024-02-30)
        if parsed is not None:
            if timezone.is_naive(parsed):
                parsed = timezone.make_aware(parsed, UTC)
            parsed = parsed.astimezone(UTC)  # OverflowError past year 9999 in UTC
    except (ValueError, OverflowError) as exc:
        raise InvalidRecord(f"{name} is not a valid date-time: {value!r:.60} ({exc})") from None
    if parsed is None:
        raise InvalidRecord(f"{name} is not an ISO 8601 date-time: {value!r:.60}")
    return parsed


def _clean(name: str, value: Any) -> Any:
    kind, max_length = _KINDS[name]
    if kind == "datetime":
        return _clean_datetime(name, value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise InvalidRecord(f"{name} must be true or false, got {value!r:.60}")
        return value
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRecord(f"{name} must be a string, got {type(value).__name__}")
    if len(value) > max_length:
        raise InvalidRecord(f"{name} is {len(value)} characters (its column holds {max_length})")
    if "\x00" in value:
        raise InvalidRecord(f"{name} contains a NUL character")
    return value


def parse_course_record(record: Any) -> tuple[CourseKey, dict[str, Any]]:
    """``(course key, content fields)`` from one import record; ``InvalidRecord`` says what is wrong.

    Catalog-owned fields, sync metadata and unknown fields in the record are ignored (never
    written by an import); ``unknown_fields`` names the unknown ones for the caller to report.
    """
    if not isinstance(record, dict):
        raise InvalidRecord("a record must be a JSON object")
    raw_key = record.get("id")
    try:
        key = parse_course_key(raw_key)
    except InvalidKeyError as exc:
        raise InvalidRecord(f"invalid course key {raw_key!r:.100}") from exc
    content = {name: _clean(name, record[name]) for name in CONTENT_FIELDS if name in record}
    return key, content


def unknown_fields(record: dict[str, Any]) -> list[str]:
    """The record's field names that are neither content fields nor knowingly ignored ones."""
    return [name for name in record if name not in _KINDS and name not in IGNORED_FIELDS]


__all__ = ["IGNORED_FIELDS", "InvalidRecord", "parse_course_record", "unknown_fields"]
