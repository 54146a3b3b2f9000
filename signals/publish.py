"""The one publish core: write a publish's content onto the overview in place, then enqueue the
catalog fetch after the commit.

Two doors call it: the in-process ``course_published`` receiver (``signals.receivers``) and the
event bus's ``COURSE_CATALOG_INFO_CHANGED`` receiver (``signals.events``). Both get the same
write (content fields only, the outbox marker in the same statement), the same kill-switch check
and the same coalesced per-course refresh; only the event door passes an event time, which
orders its writes (an event older than the content already stored is not applied).

No network I/O here, except the optional fetch-on-create (the ``FETCH_ON_CREATE`` switch), which
runs after the commit with a short timeout and falls back to the task.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from opaque_keys.edx.keys import CourseKey

from catalog.coalesce import OUTBOX_FIELD, clear_requested
from catalog.connection import build_client, why_calls_are_off
from catalog.refresh import refresh_courses
from catalog.switches import fetch_on_create
from observability import logcontext
from overviews.keys import parse_course_key
from overviews.models import CONTENT_FIELDS, CourseOverview

log = logging.getLogger("signals.publish")

# The in-request fetch of option 2 must not hold a publishing request for long.
FETCH_ON_CREATE_TIMEOUT = 2.0


class Outcome(enum.StrEnum):
    """What ``record_publish`` did (also the event metrics' outcome labels)."""

    CREATED = "created"  # a new overview row
    APPLIED = "applied"  # an existing row's content updated in place
    IGNORED_STALE = "ignored_stale"  # an event older than the stored content: nothing written
    IGNORED_DUPLICATE = "ignored_duplicate"  # the event that wrote the stored content, again


def record_publish(
    course_key: CourseKey, content: Mapping[str, Any], *, event_time: datetime | None = None
) -> Outcome:
    """Update-or-create the overview from a publish's content fields, in place, then schedule the
    catalog fetch for after the commit.

    The row is never deleted (a delete would wipe catalog data synced earlier); catalog-owned
    fields are never written here; keys of ``content`` that are not content fields are ignored.
    ``event_time`` (the event bus door): written with the content; a row whose stored event time
    is at or after it is left alone and nothing is enqueued (a replay, or a late delivery).
    """
    if not isinstance(course_key, CourseKey):
        raise TypeError(f"course_key must be a CourseKey, got {type(course_key).__name__}")
    defaults = {name: value for name, value in content.items() if name in CONTENT_FIELDS}
    # The outbox marker rides in the same UPDATE (or INSERT): the row itself records that it is
    # owed a fetch, whatever becomes of the message queued after the commit (see catalog.coalesce).
    # Set under the kill switch too, so courses published meanwhile are fetched once it is off.
    defaults[OUTBOX_FIELD] = timezone.now()
    if event_time is None:
        _, created = CourseOverview.objects.update_or_create(id=course_key, defaults=defaults)
        outcome = Outcome.CREATED if created else Outcome.APPLIED
    else:
        outcome = _write_ordered(course_key, defaults, event_time)
        if outcome in (Outcome.IGNORED_STALE, Outcome.IGNORED_DUPLICATE):
            return outcome
    # Catalog calls off (the kill switch or the admin's `enabled`, decided in one place, both read
    # from the cache): content only, no fetch queued; the marker has it fetched once they are on.
    if why_calls_are_off() is not None:
        return outcome
    transaction.on_commit(partial(_after_commit, str(course_key), outcome is Outcome.CREATED), robust=True)
    return outcome


def _write_ordered(course_key: CourseKey, defaults: dict[str, Any], event_time: datetime) -> Outcome:
    """The event door's write: one conditional UPDATE (only a row whose stored event time is
    older, or unset), else an INSERT when there is no row. No lock is held: two consumers that
    apply two events of one course at once cannot both win, and the newer one always does."""
    values = {**defaults, "content_event_time": event_time, "modified": timezone.now()}
    newer = Q(content_event_time__isnull=True) | Q(content_event_time__lt=event_time)
    for _ in range(2):  # a concurrent INSERT of the same new course: the UPDATE then applies
        if CourseOverview.objects.filter(id=course_key).filter(newer).update(**values):
            return Outcome.APPLIED
        stored = (
            CourseOverview.objects.filter(id=course_key).values_list("content_event_time", flat=True).first()
        )
        if stored is not None:
            return Outcome.IGNORED_DUPLICATE if stored == event_time else Outcome.IGNORED_STALE
        if CourseOverview.objects.filter(id=course_key).exists():
            continue  # its event time was cleared meanwhile: try the UPDATE again
        try:
            with transaction.atomic():
                CourseOverview.objects.create(id=course_key, **values)
            return Outcome.CREATED
        except IntegrityError:
            continue
    return Outcome.IGNORED_STALE


@logcontext.binding("course_key")  # its log lines (broker down, fetch failed) name the course
def _after_commit(course_key: str, created: bool) -> None:
    # Imported on use, not at the top: this module is imported by SignalsConfig.ready(), during
    # django.setup(), and importing tasks.app calls django.setup(), which is not reentrant.
    from tasks.refresh import enqueue_refresh

    if created and fetch_on_create() and _fetch_now(course_key):
        return
    enqueue_refresh(course_key)  # never raises for the broker: one warning, the marker stays


def _fetch_now(course_key: str) -> bool:
    """Option 2: fetch a new row's catalog data in this process, with a short timeout. True only
    when it was synced (its outbox marker is then cleared); any failure falls back to the task."""
    started = timezone.now()
    try:
        with build_client(timeout_budget=FETCH_ON_CREATE_TIMEOUT) as client:
            outcome = refresh_courses([parse_course_key(course_key)], client, record_permanent_errors=False)
    except Exception:  # fall back to the task whatever went wrong: the publish must not fail
        log.warning(
            "publish: in-process catalog fetch of %s failed; falling back to the task",
            course_key,
            exc_info=True,
        )
        return False
    if outcome.error is not None or outcome.not_found:
        return False
    clear_requested([course_key], not_after=started)
    return True


__all__ = ["Outcome", "record_publish"]
