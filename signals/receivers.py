"""Receivers of ``course_published``: record the publish in place and enqueue the catalog fetch
after the transaction commits. No network I/O in a receiver."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from django.db import transaction
from django.dispatch import receiver
from django.utils import timezone
from opaque_keys.edx.keys import CourseKey

from catalog.coalesce import OUTBOX_FIELD, clear_requested
from catalog.connection import build_client
from catalog.refresh import refresh_courses
from catalog.switches import catalog_calls_disabled, fetch_on_create
from overviews.keys import parse_course_key
from overviews.models import CONTENT_FIELDS, CourseOverview
from overviews.signals import course_published

log = logging.getLogger("signals.receivers")

# The in-request fetch of option 2 must not hold a publishing request for long.
FETCH_ON_CREATE_TIMEOUT = 2.0


@receiver(course_published, dispatch_uid="overviews.update_in_place")
def update_overview_in_place(sender: Any, course_key: CourseKey, **content: Any) -> None:
    """Update-or-create the overview row from the publish's content fields, in place, then
    schedule the catalog fetch for after the commit.

    The row is never deleted (a delete would wipe catalog data synced earlier); catalog-owned
    fields are never written here; keyword arguments that are not content fields are ignored.
    """
    if not isinstance(course_key, CourseKey):
        raise TypeError(f"course_key must be a CourseKey, got {type(course_key).__name__}")
    defaults = {name: value for name, value in content.items() if name in CONTENT_FIELDS}
    # The outbox marker rides in the same UPDATE (or INSERT): the row itself records that it is
    # owed a fetch, whatever becomes of the message queued after the commit (see catalog.coalesce).
    # Set under the kill switch too, so courses published meanwhile are fetched once it is off.
    defaults[OUTBOX_FIELD] = timezone.now()
    _, created = CourseOverview.objects.update_or_create(id=course_key, defaults=defaults)
    # The kill switch: content only, no fetch queued. (With the admin's `enabled` off the task is
    # still queued and stops before the network: the receiver stays at one cached switch read.)
    if catalog_calls_disabled():
        return
    transaction.on_commit(partial(_after_commit, str(course_key), created), robust=True)


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
