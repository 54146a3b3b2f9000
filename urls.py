"""URL routes: the admin and the status page, the ops API, the mobile API and the health check
(README.md "HTTP" lists them)."""

from django.contrib import admin
from django.urls import include, path

from api.health import detail_view as health_detail
from api.metrics import metrics_view

urlpatterns = [
    # Before the admin's own routes: its catch-all would answer /admin/status/ with a 404.
    path("", include("ops.urls")),
    path("admin/", admin.site.urls),
    # Health detail for staff (django-health-check) and the Prometheus scrape (bearer token).
    path("health/detail/", health_detail, name="health-detail"),
    path("metrics", metrics_view, name="metrics"),
    path("", include("api.urls")),
]

# JSON under /api/ and /health/ (an unknown route, a crash, a bad Host header); Django's pages
# elsewhere.
handler400 = "api.errors.bad_request"
handler403 = "api.errors.permission_denied"
handler404 = "api.errors.page_not_found"
handler500 = "api.errors.server_error"
