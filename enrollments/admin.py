from django.contrib import admin
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from enrollments.models import CourseEnrollment

# Characters of an API token shown in the admin: enough to tell tokens apart, not to use one.
TOKEN_PREFIX_LENGTH = 6


@admin.register(CourseEnrollment)
class CourseEnrollmentAdmin(admin.ModelAdmin):
    list_display = ("user", "course", "mode", "is_active", "created")
    list_filter = ("is_active", "mode")
    list_select_related = ("user",)
    search_fields = ("user__username", "course__id")
    raw_id_fields = ("user", "course")  # 100k+ overviews: never a <select> of every course
    readonly_fields = ("created",)
    show_full_result_count = False


def masked_token(key: str) -> str:
    return f"{key[:TOKEN_PREFIX_LENGTH]}…" if key else ""


# API tokens (DRF's authtoken) belong to users, as enrollments do, hence here. DRF's own admin
# lists every token's key in clear: anyone with a view permission could act as any user. Its
# replacement shows a prefix only, creates none (`manage.py drf_create_token USERNAME` prints a
# new key once, to whoever runs it) and edits none; a token is revoked by deleting it.
# The admin names an object by str(obj) in page titles, breadcrumbs, delete confirmations,
# messages and its change log (stored): the admin's proxy model prints the prefix there too.
TokenProxy.__str__ = lambda self: masked_token(self.key)  # type: ignore[method-assign]
admin.site.unregister(TokenProxy)


@admin.register(TokenProxy)
class MaskedTokenAdmin(TokenAdmin):
    list_display = ("key_prefix", "user", "created")
    fields = ("user", "key_prefix", "created")
    readonly_fields = ("user", "key_prefix", "created")

    @admin.display(description="key (prefix)")
    def key_prefix(self, token: TokenProxy) -> str:
        return masked_token(token.key)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
