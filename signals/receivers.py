"""Receivers of ``course_published``: the in-process door of the one publish core
(``signals.publish.record_publish``): record the publish in place and enqueue the catalog fetch
after the transaction commits. No network I/O in a receiver."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver
from opaque_keys.edx.keys import CourseKey

from overviews.signals import course_published
from signals.publish import record_publish


@receiver(course_published, dispatch_uid="overviews.update_in_place")
def update_overview_in_place(sender: Any, course_key: CourseKey, **content: Any) -> None:
    """Update-or-create the overview row from the publish's content fields, in place, then
    schedule the catalog fetch for after the commit (``record_publish``: the same core as the
    event bus's ``COURSE_CATALOG_INFO_CHANGED``). Keyword arguments that are not content fields
    are ignored; a ``course_key`` that is not a ``CourseKey`` raises ``TypeError``."""
    record_publish(course_key, content)
