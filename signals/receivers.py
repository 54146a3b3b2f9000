"""Receivers of ``course_published``: record the publish in place and enqueue the catalog fetch
after the transaction commits. No network I/O in a receiver."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from django.db import transaction
from django.dispatch import receiver
from opaque_keys.edx.keys import CourseKey

from catalog.switches import catalog_calls_disabled, fetch_on_create
from overviews.models import CONTENT_FIELDS, CourseOverview
from signals import course_published

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
    _, created = CourseOverview.objects.update_or_create(id=course_key, defaults=defaults)
    # The kill switch: content only, no fetch queued. (With the admin's `enabled` off the task is
    # still queued and stops before the network: the receiver stays at one cached switch read.)
    if catalog_calls_disabled():
        return
    transaction.on_commit(partial(_after_commit, str(course_key), created), robust=True)


def _after_commit(course_key: str, created: bool) -> None:
    from tasks.refresh import enqueue_refresh  # the Celery app loads lazily: commands need no broker

    if created and fetch_on_create() and _fetch_now(course_key):
        return
    enqueue_refresh(course_key)


def _fetch_now(course_key: str) -> bool:
    """Option 2: fetch a new row's catalog data in this process, with a short timeout. True only
    when it was synced; any failure falls back to the task."""
    from catalog.connection import build_client
    from catalog.keys import parse_course_key
    from catalog.refresh import refresh_courses

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
    return outcome.error is None and not outcome.not_found
