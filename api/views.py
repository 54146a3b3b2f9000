"""Thin views: parse at the edge, authorize, call one plain function, serialize."""

from __future__ import annotations

import logging

from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from kombu.exceptions import OperationalError as BrokerError
from opaque_keys import InvalidKeyError
from rest_framework import status
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.permissions import AllowAny, IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api.health import health_report
from api.permissions import IsSelfOrStaff
from api.serializers import CourseEnrollmentSerializer, CourseOverviewSerializer
from catalog.connection import CatalogCallsDisabled, build_client, why_calls_are_off
from catalog.keys import parse_course_key
from catalog.refresh import refresh_courses
from enrollments.models import CourseEnrollment
from overviews.models import CourseOverview
from tasks.refresh import refresh_course

log = logging.getLogger("api")

_TRUE = frozenset({"1", "true", "yes", "on"})


def _error(code: int, message: str, **extra) -> Response:
    return Response({"error": message, **extra}, status=code)


class AuthenticatedAPIView(APIView):
    """Tokens first: DRF answers a missing or wrong credential with the FIRST class's challenge, so
    a script or an app with an expired token gets 401 + ``WWW-Authenticate: Token`` (log in again),
    not a 403 (forbidden). Sessions work exactly as before (CSRF enforced)."""

    authentication_classes = (TokenAuthentication, SessionAuthentication)


class CourseOverviewRefreshView(AuthenticatedAPIView):
    """``POST /api/v1/course_overviews/<course key>/refresh/[?sync=1]`` (staff).

    202 ``{"task_id", "course_key"}``: the per-course task is queued now (no coalescing window).
    ``?sync=1``: refreshed in the request; 200 with the overview, 502 when the catalog failed (the
    stored values are kept; a permanent error is recorded on the row). 503 while the kill switch
    is on (nothing queued, nothing fetched), or when the broker or the catalog connection is not
    available. 400 on a malformed key, 404 when no overview has it.
    """

    permission_classes = (IsAdminUser,)

    def post(self, request: Request, course_key: str) -> Response:
        try:
            key = parse_course_key(course_key)
        except InvalidKeyError:
            return _error(status.HTTP_400_BAD_REQUEST, f"malformed course key: {course_key!r}")
        if not CourseOverview.objects.filter(id=key).exists():
            return _error(status.HTTP_404_NOT_FOUND, f"no course overview for {key}", course_key=str(key))
        reason = why_calls_are_off()  # the kill switch, or the integration disabled in the admin
        if reason:
            return _error(status.HTTP_503_SERVICE_UNAVAILABLE, reason, course_key=str(key))
        if request.query_params.get("sync", "").lower() in _TRUE:
            return self._refresh_now(key)
        try:
            task_id = refresh_course.apply_async((str(key),)).id
        except BrokerError as exc:
            log.warning("api: refresh of %s not queued: broker unavailable: %s", key, exc)
            return _error(status.HTTP_503_SERVICE_UNAVAILABLE, "broker unavailable", course_key=str(key))
        return Response({"task_id": task_id, "course_key": str(key)}, status=status.HTTP_202_ACCEPTED)

    def _refresh_now(self, key) -> Response:
        try:
            with build_client() as client:
                outcome = refresh_courses([key], client)
        except (CatalogCallsDisabled, ImproperlyConfigured) as exc:
            return _error(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), course_key=str(key))
        overview = CourseOverview.objects.filter(id=key).first()
        if outcome.not_found or overview is None:  # deleted meanwhile
            return _error(status.HTTP_404_NOT_FOUND, f"no course overview for {key}", course_key=str(key))
        data = CourseOverviewSerializer(overview).data
        if outcome.error is not None:
            return _error(
                status.HTTP_502_BAD_GATEWAY,
                f"catalog fetch failed: {type(outcome.error).__name__}: {outcome.error}",
                course_key=str(key),
                retryable=outcome.error.retryable,
                overview=data,
            )
        return Response(data)


class UserCourseEnrollmentsView(AuthenticatedAPIView):
    """``GET /api/mobile/v1/users/<username>/course_enrollments/`` (that user, or staff).

    The user's active enrollments, newest first, each with its course overview; a constant number
    of SQL queries however many there are.
    """

    permission_classes = (IsSelfOrStaff,)

    def get(self, request: Request, username: str) -> Response:
        if request.user.get_username() == username:
            user = request.user
        else:
            user = get_user_model().objects.filter(username=username).first()
            if user is None:
                return _error(status.HTTP_404_NOT_FOUND, f"no user {username!r}")
        enrollments = CourseEnrollment.objects.active_for(user)
        return Response(CourseEnrollmentSerializer(enrollments, many=True).data)


class HealthView(APIView):
    """``GET /health/`` (anyone): 200 when the database and the broker answer, else 503."""

    authentication_classes = ()  # a stale session or token must not turn a probe into a 401
    permission_classes = (AllowAny,)

    def get(self, request: Request) -> Response:
        report = health_report()
        code = status.HTTP_200_OK if report["ok"] else status.HTTP_503_SERVICE_UNAVAILABLE
        return Response(report, status=code, headers={"Cache-Control": "no-store"})
