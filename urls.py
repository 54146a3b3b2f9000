"""URL routes: the admin and the status page, the ops API, the mobile API and the health check
(CONTRACT.md)."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    # Before the admin's own routes: its catch-all would answer /admin/status/ with a 404.
    path("", include("ops.urls")),
    path("admin/", admin.site.urls),
    path("", include("api.urls")),
]

# JSON under /api/ and /health/ (an unknown route, a crash, a bad Host header); Django's pages
# elsewhere.
handler400 = "api.errors.bad_request"
handler403 = "api.errors.permission_denied"
handler404 = "api.errors.page_not_found"
handler500 = "api.errors.server_error"
