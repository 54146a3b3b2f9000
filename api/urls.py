"""API routes. Course keys hold ``+``, ``:``, ``@`` and, old style, ``/``: hence ``path:``."""

from django.urls import path

from api import views

urlpatterns = [
    path(
        "api/v1/course_overviews/<path:course_key>/refresh/",
        views.CourseOverviewRefreshView.as_view(),
        name="course-overview-refresh",
    ),
    path(
        "api/mobile/v1/users/<str:username>/course_enrollments/",
        views.UserCourseEnrollmentsView.as_view(),
        name="mobile-course-enrollments",
    ),
    path("health/", views.HealthView.as_view(), name="health"),
]
