"""The baseline: the algorithm of Open edX's ``sync_course_runs`` management command
(``openedx/core/djangoapps/catalog/management/commands/sync_course_runs.py``), re-created from its
description (no Open edX code is copied), on this project's models.

What the command does, and what this does the same way:

1. **Walk the whole catalog list** of course runs at the configured page size, collecting every run
   in memory first (``get_course_runs()`` returns one list). The walk here is the project's
   ``CatalogClient.iter_course_runs(page_size=...)``: ``page`` from 1 and ``page_size`` sent on every
   request, ``exclude_utm=1`` as Open edX sends it. Open edX's own walk sends no ``page`` on its first
   request, so the catalog answers 20 runs in limit/offset mode and page 2 then skips runs 21..page
   size (the catalog's pagination rule, ``standin.semantics.paginate``); that bug is *not*
   reproduced, so that both sides sync every run and the comparison is of the algorithm, not of
   the bug. One OAuth token for the walk, as there.
2. **For each run, one query for its overview**: ``CourseOverview.objects.get(id=key)``; a run the
   LMS does not have is counted as *not found*.
3. **Compare the three catalog fields**: ``marketing_url``, ``eligible_for_financial_aid`` and
   ``content_language`` (stored as ``language``), as the catalog sends them.
4. **``save()`` the row** when any of them changed (a full-row UPDATE, in autocommit: one
   transaction per row, as the command runs outside any atomic block), counting *updated* and
   *unchanged*.

No bulk reads, no bulk writes, no CCX handling (a CCX course is never looked up: the catalog does
not know its key), no sync metadata (status, synced-at), no error handling beyond the counters.

``paced=True`` (``bench/sweep_strategies.py``, against a throttled catalog whose data changes
between pages): the same walk with ``CatalogClient.list_page`` (``page`` and ``page_size`` sent,
``exclude_utm=1``), following the catalog's ``next`` (has_next) without checking ``count`` (as
Open edX does: ``iter_course_runs`` refuses a walk whose count changes), stopping at a page that is
gone (404, the list shrank), and waiting out every 429 (``Retry-After``) or fleet pause before
asking again. Open edX's client does not retry a 429 (its ``get_course_runs`` logs the error and
syncs nothing); waiting is the kindest reading, so that the comparison is of time and correctness.

``sample_every=k`` processes only every k-th run of the walk (the walk itself is always complete):
used to time the per-run loop on a sample when the full loop would take too long; the caller
extrapolates.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

# (catalog field, overview field)
COURSE_RUN_SYNC_FIELDS: tuple[tuple[str, str], ...] = (
    ("marketing_url", "marketing_url"),
    ("eligible_for_financial_aid", "eligible_for_financial_aid"),
    ("content_language", "language"),
)


@dataclass
class BaselineMetrics:
    runs_fetched: int = 0
    runs_processed: int = 0
    not_found: int = 0
    updated: int = 0
    unchanged: int = 0
    walk_s: float = 0.0
    loop_s: float = 0.0
    pages: int = 0
    throttled_waits: int = 0
    throttled_wait_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def get_course_runs(client: Any, page_size: int) -> list[dict[str, Any]]:
    """Every run of the catalog, one list page after the other, all kept in memory."""
    runs: list[dict[str, Any]] = []
    for page in client.iter_course_runs(page_size=page_size):
        runs.extend(page)
    return runs


def get_course_runs_paced(client: Any, page_size: int, metrics: BaselineMetrics) -> list[dict[str, Any]]:
    """The same walk, waiting out 429s and fleet pauses (``paced=True`` above)."""
    import time

    from catalog_client.errors import CatalogThrottled

    runs: list[dict[str, Any]] = []
    page = 1
    while True:
        try:
            listed = client.list_page(page, page_size)
        except CatalogThrottled as exc:
            wait = max(0.05, float(exc.retry_after or 0.0))
            metrics.throttled_waits += 1
            metrics.throttled_wait_s = round(metrics.throttled_wait_s + wait, 3)
            time.sleep(wait)
            continue
        if listed.past_end:
            break
        metrics.pages += 1
        runs.extend(listed.results)
        if not listed.has_next:
            break
        page += 1
    return runs


def sync_course_runs(runs: Iterable[dict[str, Any]], metrics: BaselineMetrics) -> None:
    """One ``get`` per run, compare, ``save()`` on change."""
    from opaque_keys.edx.keys import CourseKey

    from overviews.models import CourseOverview

    for course_run in runs:
        metrics.runs_processed += 1
        course_key = CourseKey.from_string(course_run["key"])
        try:
            course_overview = CourseOverview.objects.get(id=course_key)
        except CourseOverview.DoesNotExist:
            metrics.not_found += 1
            continue
        changed = False
        for catalog_field, overview_field in COURSE_RUN_SYNC_FIELDS:
            catalog_value = course_run.get(catalog_field)
            if getattr(course_overview, overview_field) != catalog_value:
                setattr(course_overview, overview_field, catalog_value)
                changed = True
        if changed:
            course_overview.save()
            metrics.updated += 1
        else:
            metrics.unchanged += 1


def run_baseline(
    client: Any, *, page_size: int, sample_every: int = 1, paced: bool = False
) -> BaselineMetrics:
    """The whole command: the walk, then the per-run loop (on every ``sample_every``-th run)."""
    import time

    metrics = BaselineMetrics()
    started = time.perf_counter()
    runs = get_course_runs_paced(client, page_size, metrics) if paced else get_course_runs(client, page_size)
    metrics.runs_fetched = len(runs)
    walked = time.perf_counter()
    metrics.walk_s = round(walked - started, 3)
    sync_course_runs(runs[::sample_every] if sample_every > 1 else runs, metrics)
    metrics.loop_s = round(time.perf_counter() - walked, 3)
    return metrics
