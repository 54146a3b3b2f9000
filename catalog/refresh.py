"""Refreshing named courses now (ops: command, admin action, staff API; and the per-course task)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.utils import timezone
from opaque_keys.edx.keys import CourseKey

from catalog.sync import (
    READ_FIELDS,
    CatalogSource,
    SyncCounters,
    failure_text,
    record_attempt,
    record_failure,
    sync_overviews,
)
from catalog_client.errors import CatalogError
from overviews.models import CourseOverview

log = logging.getLogger("catalog.refresh")


@dataclass
class RefreshOutcome:
    counters: SyncCounters = field(default_factory=SyncCounters)
    not_found: list[CourseKey] = field(default_factory=list)
    error: CatalogError | None = None


def refresh_courses(
    keys: Sequence[CourseKey],
    client: CatalogSource,
    *,
    record_permanent_errors: bool = True,
    record_retryable_errors: bool = False,
) -> RefreshOutcome:
    """Sync these courses now. A catalog error is returned, not raised, and recorded on the rows
    (``record_failure``: status ``error``, the error text, when it was tried; values kept) when it
    is permanent, or retryable and ``record_retryable_errors`` -- for callers that will not retry
    (a task that retries records the failure when it gives up). A success clears the error."""
    outcome = RefreshOutcome()
    started_at = timezone.now()
    overviews = list(CourseOverview.objects.only(*READ_FIELDS).filter(id__in=[str(k) for k in keys]))
    found = {str(ov.id) for ov in overviews}
    outcome.not_found = [key for key in keys if str(key) not in found]
    if not overviews:
        return outcome
    try:
        outcome.counters = sync_overviews(overviews, client).counters
    except CatalogError as exc:
        outcome.error = exc
        log.warning("catalog refresh: %d course(s) failed: %s", len(overviews), failure_text(exc))
        ids = [ov.id for ov in overviews]
        if record_retryable_errors if exc.retryable else record_permanent_errors:
            record_failure(ids, exc, started_at=started_at)
        else:
            record_attempt(ids)
        outcome.counters.errored = len(overviews)
    return outcome


# The per-course task calls these when it gives up on a retryable error:
#   record_failure([key], exc, started_at=<first try>)
__all__ = ["RefreshOutcome", "failure_text", "record_failure", "refresh_courses"]
