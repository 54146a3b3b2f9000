"""Thin views: parse at the edge, authorize, call one plain function, serialize.

Errors are JSON (``{"error": ...}``) and repeat at most ``api.errors.ECHO_LIMIT`` characters of
what the caller sent.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse
from opaque_keys import InvalidKeyError
from opaque_keys.edx.keys import CourseKey
from rest_framework import status
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import AllowAny, IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from api.errors import short
from api.health import health_report
from api.permissions import IsSelfOrStaff
from api.serializers import CourseOverviewSerializer, course_about_base, enrollment_items, render_json
from api.throttling import HEALTH_SCOPE, REFRESH_SCOPE, SettingsScopedRateThrottle
from catalog.connection import CatalogCallsDisabled, build_client, why_calls_are_off
from catalog.refresh import failure_text, refresh_courses
from catalog_client.client import CatalogClient
from catalog_client.errors import CatalogError, CatalogThrottled, CatalogTimeout
from enrollments.models import count_active, listed_enrollments, listed_page
from overviews.keys import parse_course_key
from overviews.models import CourseOverview
from tasks.refresh import request_refresh

log = logging.getLogger("api")

_TRUE = frozenset({"1", "true", "yes", "on"})

# Seconds a ``?sync=1`` refresh may spend on the catalog, rate-slot wait included: a web worker
# must not be held by a slow or dripping catalog (read timeouts alone reset on every byte).
SYNC_REFRESH_DEADLINE = 5.0


def _error(code: int, message: str, **extra) -> Response:
    return Response({"error": message, **extra}, status=code)


def overview_exists(key: CourseKey) -> bool:
    """Exact and case-sensitive on every database, like the refresh itself: ``refresh_courses``
    and ``request_refresh`` compare the keys they read back with ``==``. The column is BINARY
    on SQLite and PostgreSQL compares bytes; the comparison here keeps the rule in one place even
    for a database whose collation folds case."""
    return key in set(CourseOverview.objects.filter(id=key).values_list("id", flat=True))


class AuthenticatedAPIView(APIView):
    """Tokens first: DRF answers a missing or wrong credential with the FIRST class's challenge, so
    a script or an app with an expired token gets 401 + ``WWW-Authenticate: Token`` (log in again),
    not a 403 (forbidden). Sessions work exactly as before (CSRF enforced)."""

    authentication_classes = (TokenAuthentication, SessionAuthentication)


class CourseOverviewRefreshView(AuthenticatedAPIView):
    """``POST /api/v1/course_overviews/<course key>/refresh/[?sync=1]`` (staff).

    202 ``{"course_key", "status", "task_id"}``: the request goes through ``request_refresh``,
    like the admin action and ``refresh_course --async``: ``status`` is ``queued`` (a task is
    queued now; ``task_id`` is its id), ``coalesced`` (a fetch of the course is already pending:
    it serves this request too; ``task_id`` null) or ``deferred`` (the broker is unavailable; the
    request is recorded on the row and queued once the broker is back).

    ``?sync=1``: refreshed in the request within ``SYNC_REFRESH_DEADLINE`` seconds; 200 with the
    overview; 504 when the catalog did not answer in time, 502 when it failed, 503 with
    ``Retry-After`` when the fleet's catalog rate limit has no slot in time (the stored values
    are kept; the failure is recorded on the row).

    503 while the kill switch is on or the integration is disabled in the admin (nothing queued,
    nothing fetched), or when the catalog connection is not configured. 400 on a malformed key,
    404 when no overview has exactly this key. 429 beyond the ``catalog_refresh`` throttle rate.
    """

    permission_classes = (IsAdminUser,)
    throttle_classes = (SettingsScopedRateThrottle,)
    throttle_scope = REFRESH_SCOPE

    def post(self, request: Request, course_key: str) -> Response:
        try:
            key = parse_course_key(course_key)
        except InvalidKeyError:
            return _error(status.HTTP_400_BAD_REQUEST, f"malformed course key: {short(course_key)}")
        if not overview_exists(key):
            return _error(status.HTTP_404_NOT_FOUND, f"no course overview for {key}", course_key=str(key))
        reason = why_calls_are_off()  # the kill switch, or the integration disabled in the admin
        if reason:
            return _error(status.HTTP_503_SERVICE_UNAVAILABLE, reason, course_key=str(key))
        if request.query_params.get("sync", "").lower() in _TRUE:
            return self._refresh_now(key)
        return self._request_refresh(key)

    def _request_refresh(self, key: CourseKey) -> Response:
        result = request_refresh([key])
        if result.unknown:  # deleted since the check above
            return _error(status.HTTP_404_NOT_FOUND, f"no course overview for {key}", course_key=str(key))
        body = {"course_key": str(key), "task_id": result.task_ids.get(key)}
        if result.queued:
            body["status"] = "queued"
        elif result.coalesced:
            body["status"] = "coalesced"
        else:
            body["status"] = "deferred"
            body["detail"] = "broker unavailable: the request is recorded and queued once it is back"
        return Response(body, status=status.HTTP_202_ACCEPTED)

    def _refresh_now(self, key: CourseKey) -> Response:
        try:
            client = build_client(deadline=SYNC_REFRESH_DEADLINE)
        except (CatalogCallsDisabled, ImproperlyConfigured) as exc:
            return _error(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), course_key=str(key))
        _bound_rate_wait(client, time.monotonic() + SYNC_REFRESH_DEADLINE)
        with client:
            # Nobody retries an in-request refresh: a retryable failure is recorded on the row too.
            outcome = refresh_courses([key], client, record_retryable_errors=True)
        overview = CourseOverview.objects.filter(id=key).first()
        if outcome.not_found or overview is None:  # deleted meanwhile
            return _error(status.HTTP_404_NOT_FOUND, f"no course overview for {key}", course_key=str(key))
        data = CourseOverviewSerializer(overview).data
        if outcome.error is None:
            return Response(data)
        return _catalog_failure(outcome.error, key, data)


def _catalog_failure(error: CatalogError, key: CourseKey, data: dict) -> Response:
    if isinstance(error, CatalogTimeout):
        code = status.HTTP_504_GATEWAY_TIMEOUT
    elif isinstance(error, CatalogThrottled) and error.status is None:  # our own fleet limit
        code = status.HTTP_503_SERVICE_UNAVAILABLE
    else:
        code = status.HTTP_502_BAD_GATEWAY
    response = _error(
        code,
        f"catalog fetch failed: {failure_text(error)}",
        course_key=str(key),
        retryable=error.retryable,
        overview=data,
    )
    retry_after = getattr(error, "retry_after", None)
    if retry_after:
        response["Retry-After"] = str(max(1, round(retry_after)))
    return response


def _bound_rate_wait(client: CatalogClient, deadline_at: float) -> None:
    """The fleet rate gate may sleep up to ``catalog.throttle.MAX_RATE_WAIT`` for a slot; in a web
    request, a slot beyond the deadline is refused at once (``CatalogThrottled``, our own limit)."""
    gate = client.gate
    sleep = getattr(gate, "sleep", None)
    if sleep is None:
        return

    def bounded_sleep(seconds: float) -> None:
        if time.monotonic() + seconds > deadline_at:
            raise CatalogThrottled(
                "fleet rate limit: no catalog request slot within the request's deadline",
                status=None,
                retry_after=seconds,
            )
        sleep(seconds)

    gate.sleep = bounded_sleep


# Open edX's v4 mobile enrollments page (edx-drf-extensions' DefaultPagination): 10 by default,
# at most 100; a larger ``page_size`` is cut to the maximum, an unreadable one means the default.
ENROLLMENTS_PAGE_SIZE = 10
ENROLLMENTS_MAX_PAGE_SIZE = 100


def _positive_int(text: str) -> int | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value > 0 else None


def _json(body: bytes, code: int = 200) -> HttpResponse:
    return HttpResponse(body, status=code, content_type="application/json")


class UserCourseEnrollmentsView(AuthenticatedAPIView):
    """``GET /api/mobile/v1/users/<username>/course_enrollments/[?page=N][&page_size=M]`` (that
    user, or staff).

    The user's active enrollments, newest first, each with its course (id, content and catalog
    fields, and ``course_about``: the marketing URL, else ``<LMS_ROOT_URL>/courses/<id>/about``).

    Without ``page`` and ``page_size``: the whole list, a JSON array (the shape this route has
    always had). With either: one page in Open edX's v4 paginated shape, ``{"count",
    "num_pages", "current_page", "start", "next", "previous", "results"}``; ``page_size``
    defaults to ``ENROLLMENTS_PAGE_SIZE`` and is cut to ``ENROLLMENTS_MAX_PAGE_SIZE``; ``page``
    is 1-based or ``last``, and a page past the end (or not a number) is 404. ``next`` and
    ``previous`` are absolute URLs that always carry ``page``, so following them stays paginated.

    One query for the list, and one for a page (its rows and the total together; ``page=last``
    counts first), whatever the number of enrollments; the rows are tuples of only the columns
    sent, encoded to JSON in one pass.
    """

    permission_classes = (IsSelfOrStaff,)

    def get(self, request: Request, username: str) -> HttpResponse:
        if request.user.get_username() == username:
            user = request.user
        else:
            user = get_user_model().objects.filter(username=username).first()
            if user is None:
                return _error(status.HTTP_404_NOT_FOUND, f"no user {short(username)}")
        about_base = course_about_base(settings.LMS_ROOT_URL)
        params = request.query_params
        if "page" not in params and "page_size" not in params:
            return _json(render_json(enrollment_items(listed_enrollments(user), about_base)))
        return self._page(request, user, about_base)

    def _page(self, request: Request, user, about_base: str) -> HttpResponse:
        params = request.query_params
        size = min(
            _positive_int(params.get("page_size", "")) or ENROLLMENTS_PAGE_SIZE, ENROLLMENTS_MAX_PAGE_SIZE
        )
        wanted = params.get("page", "1")
        if wanted == "last":  # the only page whose number needs the count first
            number = _num_pages(count_active(user), size)
        else:
            number = _positive_int(wanted)
            if number is None:
                return _error(status.HTTP_404_NOT_FOUND, f"invalid page {short(wanted)}")
        start = (number - 1) * size
        rows = list(listed_page(user, start, size))
        if rows:
            count = rows[0][-1]
        elif number == 1:  # an empty list still has its (empty) first page
            count = 0
        else:
            num_pages = _num_pages(count_active(user), size)
            return _error(status.HTTP_404_NOT_FOUND, f"invalid page {short(wanted)}: there are {num_pages}")
        num_pages = _num_pages(count, size)
        url = request.build_absolute_uri()
        body = {
            "count": count,
            "num_pages": num_pages,
            "current_page": number,
            "start": start,
            "next": replace_query_param(url, "page", number + 1) if number < num_pages else None,
            "previous": replace_query_param(url, "page", number - 1) if number > 1 else None,
            "results": enrollment_items(rows, about_base),
        }
        return _json(render_json(body))


def _num_pages(count: int, size: int) -> int:
    return max(1, -(-count // size))


class _QuietTokenAuthentication(TokenAuthentication):
    """A wrong or expired token is anonymous here, not a 401: a probe never fails on credentials."""

    def authenticate(self, request):
        try:
            return super().authenticate(request)
        except AuthenticationFailed:
            return None


class HealthView(APIView):
    """``GET /health/`` (anyone): 200 ``{"status": "up"}`` when the database, the cache and the
    broker answer, else 503 ``{"status": "down"}``. Staff (a session or a token) also get the
    report: each check, the age of the last complete sweep, the courses never synced. Throttled
    per client address (``health`` scope), 429 beyond it."""

    authentication_classes = (_QuietTokenAuthentication, SessionAuthentication)
    permission_classes = (AllowAny,)
    throttle_classes = (SettingsScopedRateThrottle,)
    throttle_scope = HEALTH_SCOPE

    def get(self, request: Request) -> Response:
        report = health_report()
        up = report["ok"]
        body = {"status": "up" if up else "down"}
        user = request.user
        if user is not None and user.is_active and user.is_staff:
            body.update(report)
        code = status.HTTP_200_OK if up else status.HTTP_503_SERVICE_UNAVAILABLE
        return Response(body, status=code, headers={"Cache-Control": "no-store"})
