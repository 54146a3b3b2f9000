from django.contrib import admin

from overviews.models import CourseOverview


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
