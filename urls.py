"""URL routes: the admin, the ops API, the mobile API and the health check (CONTRACT.md)."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("api.urls")),
]

# JSON under /api/ and /health/ (an unknown route, a crash); Django's pages elsewhere.
handler404 = "api.errors.page_not_found"
handler500 = "api.errors.server_error"
