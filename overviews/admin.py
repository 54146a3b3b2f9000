from django.contrib import admin, messages
from kombu.exceptions import OperationalError as BrokerError

from catalog.connection import why_calls_are_off
from overviews.models import CourseOverview

# The "Refresh from catalog" action queues one task per course: more than this is a sweep's job.
MAX_ADMIN_REFRESH = 1000


@admin.register(CourseOverview)
class CourseOverviewAdmin(admin.ModelAdmin):
    list_display = ("id", "display_name", "catalog_status", "catalog_synced_at", "marketing_url")
    list_filter = ("catalog_status", "self_paced", "eligible_for_financial_aid", "language")
    search_fields = ("id", "display_name")
    readonly_fields = (
        "marketing_url",
        "eligible_for_financial_aid",
        "language",
        "catalog_synced_at",
        "catalog_status",
        "catalog_error",
        "created",
        "modified",
    )
    show_full_result_count = False  # COUNT(*) over 100k+ rows on every page load is not free
    list_per_page = 100
    actions = ("refresh_from_catalog",)

    @admin.action(description="Refresh from catalog", permissions=("change",))
    def refresh_from_catalog(self, request, queryset):
        """Queue the per-course catalog task for each selected overview, now (no coalescing)."""
        from tasks.refresh import refresh_course  # the Celery app is built on first use only

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
        queued = 0
        try:
            for key in keys:
                refresh_course.apply_async((str(key),))
                queued += 1
        except BrokerError as exc:
            self.message_user(
                request,
                f"The broker is unavailable ({type(exc).__name__}): {queued} of {len(keys)} "
                "course refresh(es) queued.",
                messages.ERROR,
            )
            return
        self.message_user(request, f"{queued} course refresh(es) queued.", messages.SUCCESS)
