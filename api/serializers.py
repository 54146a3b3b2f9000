"""JSON shapes of the API (read-only)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from rest_framework import serializers

from enrollments.models import LISTED_COURSE_FIELDS, LISTED_ENROLLMENT_FIELDS
from overviews.models import CATALOG_FIELDS, CHECK_FIELDS, CONTENT_FIELDS, SYNC_FIELDS, CourseOverview


class CourseOverviewSerializer(serializers.ModelSerializer):
    """Everything about an overview, sync metadata included: last changed, last checked, last
    attempted and a pending refresh request (the staff API)."""

    id = serializers.CharField(read_only=True)

    class Meta:
        model = CourseOverview
        fields = ("id", *CONTENT_FIELDS, *CATALOG_FIELDS, *SYNC_FIELDS, *CHECK_FIELDS)
        read_only_fields = fields


# --- The learner's enrollment list -------------------------------------------------------------
# Built by hand rather than with DRF serializers: a DRF field-by-field pass over 500 enrollments
# cost more than everything else in the request together. One pass over the tuples of
# ``enrollments.models.listed_enrollments`` (a trailing total is ignored) builds plain dicts;
# ``render_json`` encodes them once.

_N_ENROLLMENT = len(LISTED_ENROLLMENT_FIELDS)
_N_COURSE = len(LISTED_COURSE_FIELDS)
_MARKETING_URL = _N_ENROLLMENT + LISTED_COURSE_FIELDS.index("marketing_url")


def course_about_base(lms_root_url: str) -> str:
    """The prefix of the LMS's about pages: ``<LMS_ROOT_URL>/courses/``."""
    return f"{lms_root_url.rstrip('/')}/courses/"


def enrollment_items(rows: Iterable[Sequence[Any]], about_base: str) -> list[dict[str, Any]]:
    """An enrollment list item per row: ``created``, ``mode``, ``is_active`` and ``course``, its
    course's id, content and catalog fields, then ``course_about``.

    ``course_about`` follows Open edX's ``get_link_for_about_page``: the catalog's marketing URL
    when it has one, else the LMS's own about page, ``<LMS_ROOT_URL>/courses/<course id>/about``.
    """
    items = []
    append = items.append
    for row in rows:
        course = dict(zip(LISTED_COURSE_FIELDS, row[_N_ENROLLMENT : _N_ENROLLMENT + _N_COURSE], strict=True))
        course["course_about"] = row[_MARKETING_URL] or f"{about_base}{course['id']}/about"
        item = dict(zip(LISTED_ENROLLMENT_FIELDS, row[:_N_ENROLLMENT], strict=True))
        item["course"] = course
        append(item)
    return items


def render_json(data: Any) -> bytes:
    """JSON like DRF's renderer writes it for these shapes (aware UTC datetimes as ISO 8601 with a
    ``Z``, microseconds when there are any), encoded in one C call."""
    return orjson.dumps(data, option=orjson.OPT_UTC_Z)
