"""URL routes: the admin, the ops API, the mobile API and the health check (CONTRACT.md)."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("api.urls")),
]
