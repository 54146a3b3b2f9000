"""Refreshing named courses now (ops: command, admin action, staff API; and the per-course task)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from opaque_keys.edx.keys import CourseKey

from catalog.errors import CatalogError
from catalog.sync import READ_FIELDS, CatalogSource, SyncCounters, record_error, sync_overviews
from overviews.models import CourseOverview

log = logging.getLogger("catalog.refresh")


@dataclass
class RefreshOutcome:
    counters: SyncCounters = field(default_factory=SyncCounters)
    not_found: list[CourseKey] = field(default_factory=list)
    error: CatalogError | None = None


def refresh_courses(
    keys: Sequence[CourseKey], client: CatalogSource, *, record_permanent_errors: bool = True
) -> RefreshOutcome:
    """Sync these courses now. A catalog error is returned, not raised; a permanent one (not worth
    retrying) is recorded on the rows as ``catalog_status=error`` with its message, values kept."""
    outcome = RefreshOutcome()
    overviews = list(CourseOverview.objects.only(*READ_FIELDS).filter(id__in=list(keys)))
    found = {ov.id for ov in overviews}
    outcome.not_found = [key for key in keys if key not in found]
    if not overviews:
        return outcome
    try:
        outcome.counters = sync_overviews(overviews, client).counters
    except CatalogError as exc:
        outcome.error = exc
        log.warning("catalog refresh: %d course(s) failed: %s: %s", len(overviews), type(exc).__name__, exc)
        if record_permanent_errors and not exc.retryable:
            record_error(overviews, f"{type(exc).__name__}: {exc}")
        outcome.counters.errored = len(overviews)
    return outcome
