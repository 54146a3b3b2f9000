"""Receivers of ``course_published``: record the publish in place; never any network I/O here."""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import receiver
from opaque_keys.edx.keys import CourseKey

from overviews.models import CONTENT_FIELDS, CourseOverview
from signals import course_published

log = logging.getLogger("signals.receivers")


@receiver(course_published, dispatch_uid="overviews.update_in_place")
def update_overview_in_place(sender: Any, course_key: CourseKey, **content: Any) -> None:
    """Update-or-create the overview row from the publish's content fields, in place.

    The row is never deleted (a delete would wipe catalog data synced earlier); catalog-owned
    fields are never written here; unknown keyword arguments are ignored.
    """
    if not isinstance(course_key, CourseKey):
        raise TypeError(f"course_key must be a CourseKey, got {type(course_key).__name__}")
    defaults = {name: value for name, value in content.items() if name in CONTENT_FIELDS}
    CourseOverview.objects.update_or_create(id=course_key, defaults=defaults)
