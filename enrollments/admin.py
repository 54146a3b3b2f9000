from django.contrib import admin

from enrollments.models import CourseEnrollment


@admin.register(CourseEnrollment)
class CourseEnrollmentAdmin(admin.ModelAdmin):
    list_display = ("user", "course", "mode", "is_active", "created")
    list_filter = ("is_active", "mode")
    list_select_related = ("user",)
    search_fields = ("user__username", "course__id")
    raw_id_fields = ("user", "course")  # 100k+ overviews: never a <select> of every course
    readonly_fields = ("created",)
    show_full_result_count = False
