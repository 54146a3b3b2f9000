"""Validating LMS course records (import files, publish payloads) at the edge."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from opaque_keys import InvalidKeyError
from opaque_keys.edx.keys import CourseKey

from catalog.keys import parse_course_key
from overviews.models import CONTENT_FIELDS

_DATETIME_FIELDS = {"start", "end", "enrollment_start", "enrollment_end"}
_BOOL_FIELDS = {"self_paced", "invitation_only"}
_MAX_TEXT = 10_000


class InvalidRecord(ValueError):
    pass


def _clean(name: str, value: Any) -> Any:
    if name in _DATETIME_FIELDS:
        if value is None:
            return None
        parsed = parse_datetime(value) if isinstance(value, str) else None
        if parsed is None:
            raise InvalidRecord(f"{name} is not an ISO 8601 date-time: {value!r:.60}")
        return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, timezone.utc)
    if name in _BOOL_FIELDS:
        if not isinstance(value, bool):
            raise InvalidRecord(f"{name} must be true or false, got {value!r:.60}")
        return value
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise InvalidRecord(f"{name} must be a string of at most {_MAX_TEXT} characters")
    return value


def parse_course_record(record: Any) -> tuple[CourseKey, dict[str, Any]]:
    """``(course key, content fields)`` from one import record; ``InvalidRecord`` says what is wrong.

    Catalog-owned fields and unknown fields in the record are ignored (never written by an import).
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


__all__ = ["InvalidRecord", "datetime", "parse_course_record"]
