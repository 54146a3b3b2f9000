"""The status page under the admin's prefix, behind the admin's login (staff only)."""

from django.contrib import admin
from django.urls import path

from ops import views

urlpatterns = [
    path("admin/status/", admin.site.admin_view(views.status_page), name="ops-status"),
    path("admin/status.json", admin.site.admin_view(views.status_json), name="ops-status-json"),
    path("admin/status/sweep/", admin.site.admin_view(views.trigger_sweep), name="ops-sweep"),
]
