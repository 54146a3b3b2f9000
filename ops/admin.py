"""The Django admin: the overview rows (read-only, with a "Refresh from catalog" action), the
catalog integration's configuration (with history) and the sweep records (read-only).

Registered here, on the operator surface, not in the apps that own the models: the refresh action
enqueues, and the LMS side (``overviews``) and the sync core (``catalog``) import nothing above
them.

Nothing on an overview row is the admin's to edit: the key identifies the course (editing it made a second
row), the content fields belong to the LMS (the next publish overwrites them) and the catalog
fields and sync metadata belong to the sync. The change page is a view page.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from config_models.admin import ConfigurationModelAdmin
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST
from opaque_keys import InvalidKeyError

from catalog.connection import why_calls_are_off
from catalog.models import CatalogIntegration, SweepChunk, SweepRun, SweepStatus
from catalog.walk import KEYS, WALK
from overviews.models import CATALOG_FIELDS, CHECK_FIELDS, CONTENT_FIELDS, SYNC_FIELDS, CourseOverview

log = logging.getLogger("overviews.admin")  # the logger's name is unchanged since the move

# The index shows the catalog sync's banner (what is wrong now) and a link to the status page.
admin.site.index_template = "ops/admin_index.html"

# The "Refresh from catalog" action asks for at most this many courses: more is a sweep's job.
MAX_ADMIN_REFRESH = 1000
# Seconds the action waits for a worker to answer a ping before it warns that none runs.
WORKER_PING_TIMEOUT = 1.0


def workers_answering(timeout: float = WORKER_PING_TIMEOUT) -> bool | None:
    """True when a worker answers a ping within ``timeout``, False when none does, None when it
    cannot be told: the embedded broker (kombu's SQLAlchemy transport) has no broadcast, so no
    worker could ever answer there; a broker error is reported by the refresh itself."""
    # Imported on use, not at the top: the admin modules are imported during django.setup()
    # (admin autodiscovery), and importing tasks.app calls django.setup(), which is not reentrant.
    from tasks.app import app

    if str(app.conf.broker_url or "").startswith("sqla+"):
        return None
    try:
        # limit=1: return at the first reply instead of waiting the whole timeout
        return bool(app.control.ping(timeout=timeout, limit=1))
    except Exception as exc:  # the ping is advice; any failure just means "cannot tell"
        log.warning("admin: worker ping failed: %s", type(exc).__name__)
        return None


@admin.register(CourseOverview)
class CourseOverviewAdmin(admin.ModelAdmin):
    list_display = ("id", "display_name", "catalog_status", "catalog_synced_at", "marketing_url")
    # Fixed choices only: a filter on ``language`` listed its values with SELECT DISTINCT over the
    # whole table on every page load (one link per language). "Empty / not empty" answers the
    # operator's question (did the catalog send a language?) without reading the table.
    list_filter = (
        "catalog_status",
        "self_paced",
        "eligible_for_financial_aid",
        ("language", admin.EmptyFieldListFilter),
    )
    search_fields = ("id", "display_name")
    # Shown read-only on the view page (the change page refuses every edit: see below).
    readonly_fields = (
        "id",
        *CONTENT_FIELDS,
        *CATALOG_FIELDS,
        *SYNC_FIELDS,
        *CHECK_FIELDS,
        "created",
        "modified",
    )
    show_full_result_count = False  # COUNT(*) over 100k+ rows on every page load is not free
    list_per_page = 100
    actions = ("refresh_from_catalog",)

    def has_add_permission(self, request) -> bool:
        return False  # overviews come from the LMS: a publish or `manage.py import_courses`

    def has_change_permission(self, request, obj=None) -> bool:
        # The changelist (and its action) needs the change permission; one row's page is a view
        # page whatever the permissions: no field is the admin's (module docstring). Saving it
        # would also rewrite every column from a copy read before the save.
        if obj is not None:
            return False
        return super().has_change_permission(request, obj)

    def get_object(self, request, object_id, from_field=None):
        """A malformed key in the URL is a 404 (the key field raises InvalidKeyError, which the
        admin does not catch: it was a 500)."""
        try:
            return super().get_object(request, object_id, from_field)
        except InvalidKeyError:
            raise Http404("not a course key") from None

    def get_urls(self):
        refresh = self.admin_site.admin_view(require_POST(self.refresh_one_view))
        return [
            path("<path:object_id>/refresh/", refresh, name="overviews_courseoverview_refresh"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "may_refresh": self.has_change_permission(request)}
        return super().change_view(request, object_id, form_url, extra_context)

    def refresh_one_view(self, request, object_id):
        """The change page's "Refresh from catalog" button: the action for this one course."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404("no such course")
        self.refresh_from_catalog(request, self.get_queryset(request).filter(pk=obj.pk))
        return HttpResponseRedirect(
            reverse("admin:overviews_courseoverview_change", args=[quote(str(obj.pk))])
        )

    @admin.action(description="Refresh from catalog", permissions=("change",))
    def refresh_from_catalog(self, request, queryset):
        """Ask a worker to fetch each selected course, through ``request_refresh`` like the API:
        requests coalesce on the course's pending fetch, and each is recorded on its row."""
        from tasks.refresh import request_refresh  # on use: see workers_answering

        reason = why_calls_are_off()  # the kill switch, or the integration disabled in the admin
        if reason:
            self.message_user(request, f"{reason.capitalize()}: nothing was queued.", messages.WARNING)
            return
        # At most one key over the limit is read: "select all" over the whole table costs nothing.
        keys = list(queryset.order_by().values_list("id", flat=True)[: MAX_ADMIN_REFRESH + 1])
        if len(keys) > MAX_ADMIN_REFRESH:
            self.message_user(
                request,
                f"More than {MAX_ADMIN_REFRESH} courses selected: nothing was queued. "
                "Select fewer, or run a sweep (`manage.py sync_catalog --async`).",
                messages.ERROR,
            )
            return
        result = request_refresh(keys)
        summary = (
            f"{len(result.queued)} course refresh(es) queued, "
            f"{len(result.coalesced)} already pending (coalesced)."
        )
        if result.unknown:
            summary += f" {len(result.unknown)} no longer exist."
        if result.deferred:
            self.message_user(
                request,
                f"{summary} {len(result.deferred)} recorded but not queued: the broker is unavailable "
                f"({result.broker_error or 'no detail'}); they are queued once it is back.",
                messages.ERROR,
            )
            return
        self.message_user(request, summary, messages.SUCCESS)
        if (result.queued or result.coalesced) and workers_answering() is False:
            self.message_user(
                request,
                f"No Celery worker answered a ping within {WORKER_PING_TIMEOUT:g} s: "
                "the refreshes wait in the queue until a worker runs.",
                messages.WARNING,
            )


# Every field, the three sweep tunables too (``sweep_strategy``, ``walk_page_budget``,
# ``walk_page_size_ceiling``), is on the add form, prefilled with the current values; every save
# is a new row (config_models), so the list is the history.
admin.site.register(CatalogIntegration, ConfigurationModelAdmin)


TIMES = "\u00d7"  # the multiplication sign


def walk_sizes_text(sizes) -> str:
    """``[[20, 2], [40, 1], [80, 5]]`` as "20x2, 40x1, 80x5" with a multiplication sign (empty for
    no pages)."""
    parts = []
    for pair in sizes or []:
        try:
            size, pages = pair
            parts.append(f"{int(size):,}{TIMES}{int(pages):,}")
        except (TypeError, ValueError):
            parts.append(str(pair))  # not the recorded shape: shown as stored, never a 500
    return ", ".join(parts)


def walk_position(run: SweepRun) -> str:
    """The walk's position in the catalog's list of the catalog's count: "1,600 of 3,200"."""
    total = f"{run.catalog_count:,}" if run.catalog_count is not None else "?"
    return f"{run.walk_offset:,} of {total}"


def requests_vs_estimate(run: SweepRun) -> str:
    """The requests made against the chosen strategy's estimate, the other in brackets: "72
    requests; estimate walk 70 (keys 1,450)". "-" before the choice."""
    if not run.strategy:
        return "-"
    if run.strategy == WALK:
        chosen, other, other_name = run.estimate_walk, run.estimate_keys, KEYS
    else:
        chosen, other, other_name = run.estimate_keys, run.estimate_walk, WALK
    text = f"{run.catalog_requests:,} requests; estimate {run.strategy} "
    text += f"{chosen:,}" if chosen is not None else "none"
    if other is not None:
        text += f" ({other_name} {other:,})"
    return text


class ReadOnlyAdmin(admin.ModelAdmin):
    """Sweep records are written by the sweep only, and kept: a run's row is also the sweep's
    lease while it is ``running`` (deleting it would let a second sweep start beside the first,
    whose chunk tasks then find no run), and its chunks are its counters' record."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(SweepRun)
class SweepRunAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "status",
        "trigger",
        "strategy",
        "requests_vs_estimate",
        "started_at",
        "finished_at",
        "progress",
        "courses_seen",
        "courses_updated",
        "courses_missing",
        "courses_refused",
        "courses_errored",
        "catalog_requests",
        "retries",
        "throttled",
        "resumed",
    )
    list_filter = ("status", "trigger", "strategy")
    date_hierarchy = "started_at"
    readonly_fields = (
        "chunks_link",
        "failed_courses_link",
        "requests_vs_estimate",
        "walk_progress",
        "walk_sizes_text",
    )
    # The strategy's section on the view page, in this order (the rest follows under "Run").
    # ``walk_offset`` and ``walk_sizes`` are shown through ``walk_progress`` and ``walk_sizes_text``.
    STRATEGY_FIELDS = (
        "strategy",
        "strategy_reason",
        "catalog_count",
        "requests_vs_estimate",
        "estimate_keys",
        "estimate_walk",
        "catalog_requests",
    )
    WALK_FIELDS = (
        "walk_progress",
        "walk_pages",
        "walk_sizes_text",
        "walk_page_size",
        "walk_started_at",
        "walk_done",
        "walk_error",
    )
    SHOWN_THROUGH = ("walk_offset", "walk_sizes")

    @admin.display(description="chunks")
    def chunks_link(self, run: SweepRun) -> str:
        """Its chunks, and its failed ones, in the chunk changelist filtered by run."""
        url = reverse("admin:catalog_sweepchunk_changelist")
        return format_html(
            '<a href="{}?run__exact={}">all {} chunk(s)</a> &middot; '
            '<a href="{}?run__exact={}&amp;status__exact=failed">{} failed</a>',
            url,
            run.pk,
            run.chunks_total,
            url,
            run.pk,
            run.chunks_failed,
        )

    @admin.display(description="failed courses")
    def failed_courses_link(self, run: SweepRun) -> str:
        """Overviews in error whose last fetch was tried while this run ran (a failed chunk marks
        its courses ``error``); a later success or attempt moves a course out of the list."""
        query = {"catalog_status__exact": "error", "catalog_attempted_at__gte": run.started_at.isoformat()}
        if run.finished_at:
            query["catalog_attempted_at__lte"] = run.finished_at.isoformat()
        url = reverse("admin:overviews_courseoverview_changelist")
        return format_html('<a href="{}?{}">courses in error from this run</a>', url, urlencode(query))

    def get_fields(self, request, obj=None):
        links = ["chunks_link", "failed_courses_link"]  # first on the page: where to look next
        return links + [f for f in super().get_fields(request, obj) if f not in links]

    def get_fieldsets(self, request, obj=None):
        """The links and the run's record, then the strategy (its reason, the catalog's count, the
        estimates against the requests made), then the walk's pages, sizes, progress and error."""
        sections = {*self.STRATEGY_FIELDS, *self.WALK_FIELDS, *self.SHOWN_THROUGH}
        run = [f for f in self.get_fields(request, obj) if f not in sections]
        return [
            (None, {"fields": run}),
            ("Strategy", {"fields": list(self.STRATEGY_FIELDS)}),
            ("Walk (walk + repair only)", {"fields": list(self.WALK_FIELDS)}),
        ]

    @admin.display(description="requests vs estimate")
    def requests_vs_estimate(self, run: SweepRun) -> str:
        """The requests made against the chosen strategy's estimate, and the other's estimate.
        The requests made include the count probe, retries, 429 answers and token requests; the
        estimates count the sweep's pages after the probe, without retries."""
        return requests_vs_estimate(run)

    @admin.display(description="walk progress")
    def walk_progress(self, run: SweepRun) -> str:
        """The walk's position in the catalog's list (``walk_offset``) of the catalog's count."""
        if run.strategy != WALK:
            return "not a walk"
        text = walk_position(run)
        if run.walk_error:
            return f"{text}: stopped early (see walk error); the repair fetches the rest by key"
        if run.walk_done:
            return f"{text}: done"
        return f"{text}: walking" if run.status == SweepStatus.RUNNING else text

    @admin.display(description="walk page sizes")
    def walk_sizes_text(self, run: SweepRun) -> str:
        """The page sizes the walk used, in order, as size x pages."""
        return walk_sizes_text(run.walk_sizes) or "-"

    @admin.display(description="chunks done")
    def progress(self, run: SweepRun) -> str:
        planned = "" if run.planning_done else "+"
        return f"{run.chunks_done}/{run.chunks_total}{planned}" + (
            f" ({run.chunks_failed} failed)" if run.chunks_failed else ""
        )


@admin.register(SweepChunk)
class SweepChunkAdmin(ReadOnlyAdmin):
    list_display = ("run", "seq", "status", "first_key", "last_key", "size", "updated", "retries", "error")
    list_filter = ("status",)
    search_fields = ("first_key", "last_key")
    list_select_related = ("run",)
    show_full_result_count = False
