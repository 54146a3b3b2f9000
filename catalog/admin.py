from config_models.admin import ConfigurationModelAdmin
from django.contrib import admin

from catalog.models import CatalogIntegration, SweepChunk, SweepRun

admin.site.register(CatalogIntegration, ConfigurationModelAdmin)


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
    list_filter = ("status", "trigger")
    date_hierarchy = "started_at"

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
