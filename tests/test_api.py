"""The HTTP side (README.md "HTTP"): the staff refresh API, the mobile enrollments API and
/health/ (the admin is in tests/test_admin.py). The catalog is mocked at the wire (or served by
the stand-in over real HTTP for the deadline); the task queue is patched only to see what was
queued (no eager mode)."""

from __future__ import annotations

import json
import socket
import time
from datetime import timedelta
from unittest import mock
from urllib.parse import quote

import pytest
import responses
from django.core.management import call_command
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError
from opaque_keys.edx.keys import CourseKey
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from waffle.testutils import override_switch

from api import health
from catalog.models import SweepRun, SweepStatus
from catalog.switches import DISABLE_CATALOG_CALLS
from enrollments.models import CourseEnrollment
from overviews.models import (
    CATALOG_FIELDS,
    CHECK_FIELDS,
    CONTENT_FIELDS,
    SYNC_FIELDS,
    CatalogStatus,
    CourseOverview,
)
from tests.factories import CourseOverviewFactory, catalog_run
from tests.wire import WireCatalog

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker_presumed_up")]

KEY = "course-v1:ApiX+A101+2025"
KEY_STYLES = ("course-v1:Org+Num+Run", "Org/Num/Run", "ccx-v1:Org+Num+Run+ccx@3")


def refresh_url(key: str) -> str:
    return f"/api/v1/course_overviews/{key}/refresh/"


def enrollments_url(username: str) -> str:
    return f"/api/mobile/v1/users/{username}/course_enrollments/"


def overview(key: str = KEY, **fields) -> CourseOverview:
    return CourseOverviewFactory(id=CourseKey.from_string(key), **fields)


@pytest.fixture
def wire(catalog_settings):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield WireCatalog(rsps)


def queued_keys(queued) -> list[str]:
    return [call.args[0][0] for call in queued.call_args_list]


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("ops", password="pw", is_staff=True)


@pytest.fixture
def learner(django_user_model):
    return django_user_model.objects.create_user("learner", password="pw")


def logged_in(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def token_client(user) -> APIClient:
    """Authenticated as ``manage.py drf_create_token USERNAME`` would let a script be."""
    call_command("drf_create_token", user.username, stdout=mock.Mock())
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get(user=user).key}")
    return client


# --- POST /api/v1/course_overviews/<course key>/refresh/ ----------------------------------------


@pytest.mark.parametrize("key", KEY_STYLES)
def test_refresh_queues_the_task_now_and_answers_202(key, staff, queued):
    overview(key)
    response = logged_in(staff).post(refresh_url(key))
    assert response.status_code == 202
    assert response.json() == {"task_id": "task-123", "course_key": key, "status": "queued"}
    # no countdown: an ops refresh skips the coalescing window
    queued.assert_called_once_with((key,), countdown=None)
    assert CourseOverview.objects.get(id=key).catalog_refresh_requested_at is not None  # the record


def test_refresh_accepts_a_percent_encoded_key(staff, queued):
    overview(KEY)
    response = logged_in(staff).post(refresh_url(quote(KEY, safe="")))
    assert response.status_code == 202
    assert response.json()["course_key"] == KEY


def test_refresh_with_a_token(staff, queued):
    overview()
    assert token_client(staff).post(refresh_url(KEY)).status_code == 202
    queued.assert_called_once()


def test_refresh_with_a_wrong_token_is_401(queued):
    overview()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = client.post(refresh_url(KEY))
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"
    assert not queued.called


def test_refresh_is_for_staff_only(learner, queued):
    overview()
    assert logged_in(learner).post(refresh_url(KEY)).status_code == 403
    assert token_client(learner).post(refresh_url(KEY)).status_code == 403
    assert APIClient().post(refresh_url(KEY)).status_code == 401
    assert not queued.called


def test_refresh_needs_post(staff, queued):
    overview()
    assert logged_in(staff).get(refresh_url(KEY)).status_code == 405
    assert not queued.called


def test_refresh_with_a_session_needs_the_csrf_token(staff, queued):
    overview()
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(staff)
    assert client.post(refresh_url(KEY)).status_code == 403
    assert not queued.called


@pytest.mark.parametrize("raw", ["not-a-key", "course-v1:OnlyOrg", quote("a b c", safe="")])
def test_refresh_of_a_malformed_key_is_400(raw, staff, queued):
    response = logged_in(staff).post(refresh_url(raw))
    assert response.status_code == 400
    assert "malformed course key" in response.json()["error"]
    assert not queued.called


@pytest.mark.parametrize("raw", ["x" * 10_000, "course-v1:Org+Num+" + "R" * 10_000])
def test_a_10000_character_key_is_400_and_not_echoed_back(raw, staff, queued):
    response = logged_in(staff).post(refresh_url(raw))
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert len(response.content) < 300
    error = response.json()["error"]
    assert error.startswith("malformed course key: '") and "(10" in error  # cut, with the length
    assert not queued.called


def test_an_unknown_user_of_10000_characters_is_not_echoed_back(staff):
    response = logged_in(staff).get(enrollments_url("u" * 10_000))
    assert response.status_code == 404
    assert len(response.content) < 300 and response.json()["error"].startswith("no user 'uuu")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/nothing-here/"),
        ("post", "/api/v1/nope/"),
        ("get", "/api/v1/course_overviews/"),
        ("post", "/api/v1/course_overviews/course-v1:ApiX+A101+2025/refresh/extra/"),
        ("get", "/api/mobile/v1/users/"),
        ("get", "/health/more/"),
    ],
)
def test_unknown_routes_under_the_api_are_json_404s(method, path, staff):
    response = getattr(logged_in(staff), method)(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": "not found"}


@pytest.mark.parametrize("path", ["/health/", "/api/v1/course_overviews/x/refresh/"])
def test_a_host_not_allowed_is_a_json_400_under_the_api(path, client):
    response = client.get(path, HTTP_HOST="evil.example.com")
    assert response.status_code == 400
    assert response.json() == {"error": "bad request"}
    assert client.get("/admin/", HTTP_HOST="evil.example.com")["Content-Type"].startswith("text/html")


def test_a_permission_denied_outside_drf_is_a_json_403_under_the_api(rf):
    from django.core.exceptions import PermissionDenied

    from api.errors import permission_denied

    response = permission_denied(rf.get("/api/v1/x/"), PermissionDenied())
    assert (response.status_code, json.loads(response.content)) == (403, {"error": "forbidden"})
    assert permission_denied(rf.get("/admin/"), PermissionDenied())["Content-Type"].startswith("text/html")


def test_unknown_routes_outside_the_api_keep_djangos_html_404(client):
    response = client.get("/not-the-api/")
    assert response.status_code == 404 and response["Content-Type"].startswith("text/html")


def test_a_crash_under_the_api_is_a_json_500_without_details(staff):
    client = APIClient(raise_request_exception=False)
    client.force_login(staff)
    with mock.patch("api.views.health_report", side_effect=RuntimeError("secret detail /etc/x")):
        response = client.get("/health/")
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error"}


def test_drf_errors_carry_error_too(learner, queued):
    response = logged_in(learner).post(refresh_url(KEY))
    assert response.status_code == 403
    assert response.json()["error"] == response.json()["detail"]


@pytest.mark.parametrize("query", ["", "?sync=1"])
@pytest.mark.parametrize("asked", ["course-v1:apix+a101+2025", "course-v1:APIX+A101+2025", "ApiX/a101/2025"])
def test_key_lookups_are_exact_and_case_sensitive_on_both_paths(asked, query, staff, wire, queued):
    """One rule for both paths (and both databases): a key differing in case is another course."""
    overview(KEY)
    overview("ApiX/A101/2025")
    wire.add(catalog_run(KEY), catalog_run("ApiX/A101/2025"))
    response = logged_in(staff).post(refresh_url(quote(asked, safe="")) + query)
    assert response.status_code == 404
    assert response.json() == {"error": f"no course overview for {asked}", "course_key": asked}
    assert not queued.called and wire.list_requests == 0


def test_refresh_of_an_unknown_course_is_404(staff, queued):
    response = logged_in(staff).post(refresh_url(KEY))
    assert response.status_code == 404
    assert response.json() == {"error": f"no course overview for {KEY}", "course_key": KEY}
    assert not queued.called


def test_refresh_when_the_broker_is_down_is_recorded_and_deferred(staff, queued):
    overview()
    queued.side_effect = BrokerError("Connection refused")
    response = logged_in(staff).post(refresh_url(KEY))
    assert response.status_code == 202
    body = response.json()
    assert (body["status"], body["task_id"]) == ("deferred", None)
    assert "broker unavailable" in body["detail"]
    # the request is in the row: the outbox requeue queues it once the broker is back
    assert CourseOverview.objects.get(id=KEY).catalog_refresh_requested_at is not None


def test_500_refresh_posts_for_one_course_queue_one_task(staff, queued, settings):
    """They coalesce on the course's pending marker, as publishes do (the throttle is raised here
    so that every POST reaches the view)."""
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"catalog_refresh": "1000/minute", "health": "60/minute"},
    }
    overview()
    client = token_client(staff)
    statuses = [client.post(refresh_url(KEY)).json()["status"] for _ in range(500)]
    assert statuses[0] == "queued" and set(statuses[1:]) == {"coalesced"}
    assert queued_keys(queued) == [KEY]


def test_a_coalesced_request_is_queued_again_once_the_task_has_started(staff, queued):
    from catalog import coalesce

    overview()
    client = logged_in(staff)
    assert client.post(refresh_url(KEY)).json()["status"] == "queued"
    assert client.post(refresh_url(KEY)).json()["status"] == "coalesced"
    coalesce.clear_pending(KEY)  # what the task does once it holds the course's running lock
    assert client.post(refresh_url(KEY)).json()["status"] == "queued"
    assert queued_keys(queued) == [KEY, KEY]


def test_the_refresh_endpoint_is_throttled_per_user(staff, queued, django_user_model, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"catalog_refresh": "3/minute", "health": "60/minute"},
    }
    overview()
    client = logged_in(staff)
    assert [client.post(refresh_url(KEY)).status_code for _ in range(3)] == [202, 202, 202]
    throttled = client.post(refresh_url(KEY))
    assert throttled.status_code == 429
    assert "throttled" in throttled.json()["error"] and 0 < int(throttled["Retry-After"]) <= 60
    other = django_user_model.objects.create_user("ops2", password="pw", is_staff=True)
    assert logged_in(other).post(refresh_url(KEY)).status_code == 202  # a count per user
    assert queued_keys(queued) == [KEY]


def test_the_default_refresh_throttle_is_60_a_minute(staff, queued):
    overview()
    client = logged_in(staff)
    codes = [client.post(refresh_url(KEY)).status_code for _ in range(61)]
    assert codes[:60] == [202] * 60 and codes[60] == 429


def test_a_cache_outage_does_not_block_the_throttled_endpoints(staff, queued, embedded_broker):
    from api.throttling import SettingsScopedRateThrottle

    with mock.patch.object(SettingsScopedRateThrottle, "cache") as broken:
        broken.get.side_effect = ConnectionError("cache down")
        assert APIClient().get("/health/").status_code == 200


@pytest.mark.parametrize("key", KEY_STYLES)
def test_sync_refresh_answers_200_with_the_whole_overview(key, staff, wire, queued):
    master = key.replace("ccx-v1:", "course-v1:").replace("+ccx@3", "")
    wire.add(catalog_run(master, marketing_url="https://www.example.com/x", content_language="fr"))
    overview(key, display_name="Hello")
    response = logged_in(staff).post(refresh_url(key) + "?sync=1")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"id", *CONTENT_FIELDS, *CATALOG_FIELDS, *SYNC_FIELDS, *CHECK_FIELDS}
    assert body["catalog_checked_at"]  # answered now: last checked
    assert (body["id"], body["display_name"], body["marketing_url"]) == (
        key,
        "Hello",
        "https://www.example.com/x",
    )
    assert body["catalog_status"] == CatalogStatus.OK and body["catalog_synced_at"]
    assert CourseOverview.objects.get(id=key).marketing_url == "https://www.example.com/x"
    assert not queued.called


def test_sync_refresh_of_a_course_the_catalog_lacks_is_200_missing(staff, wire):
    overview(marketing_url="https://keep.example/x")
    response = logged_in(staff).post(refresh_url(KEY) + "?sync=1")
    assert response.status_code == 200
    assert response.json()["catalog_status"] == CatalogStatus.MISSING
    assert response.json()["marketing_url"] == "https://keep.example/x"


def test_sync_refresh_with_a_token(staff, wire):
    wire.add(catalog_run(KEY))
    overview()
    assert token_client(staff).post(refresh_url(KEY) + "?sync=1").status_code == 200


def test_sync_refresh_when_the_catalog_is_down_is_502_keeps_the_data_and_records_it(staff, wire):
    overview(marketing_url="https://keep.example/x", catalog_status=CatalogStatus.OK)
    wire.before_list = lambda w: (503, {}, "down for maintenance")
    response = logged_in(staff).post(refresh_url(KEY) + "?sync=1")
    assert response.status_code == 502
    body = response.json()
    assert body["error"].startswith("catalog fetch failed: CatalogServerError")
    assert body["retryable"] is True
    assert body["overview"]["marketing_url"] == "https://keep.example/x"
    row = CourseOverview.objects.get(id=KEY)
    assert row.marketing_url == "https://keep.example/x"  # kept
    # nobody retries an in-request refresh: the failure is on the row, where it can be filtered
    assert row.catalog_status == CatalogStatus.ERROR and row.catalog_error.startswith("CatalogServerError")
    assert row.catalog_attempted_at is not None


@pytest.fixture
def dripping_catalog(settings):
    """The stand-in over real HTTP, sending its bodies one byte every 300 ms (each read returns
    before the read timeout: only an overall deadline stops it)."""
    from standin import StandinServer, make_run

    with StandinServer([make_run(KEY)]) as server:
        settings.CATALOG_API_URL = server.api_url
        settings.CATALOG_OAUTH_URL = server.oauth_url
        settings.CATALOG_CLIENT_ID = server.client_id
        settings.CATALOG_CLIENT_SECRET = server.client_secret
        server.set_faults(drip_ms=300)
        yield server


def test_sync_refresh_against_a_dripping_catalog_is_504_within_its_deadline(staff, dripping_catalog):
    from api import views

    overview(marketing_url="https://keep.example/x", catalog_status=CatalogStatus.OK)
    started = time.monotonic()
    with mock.patch.object(views, "SYNC_REFRESH_DEADLINE", 1.0):
        response = logged_in(staff).post(refresh_url(KEY) + "?sync=1")
    elapsed = time.monotonic() - started
    assert response.status_code == 504, response.json()
    assert response.json()["error"].startswith("catalog fetch failed: CatalogTimeout")
    assert elapsed < 3.0  # the deadline, not the 15 s read timeout, nor the whole body
    row = CourseOverview.objects.get(id=KEY)
    assert row.marketing_url == "https://keep.example/x"


def test_sync_refresh_uses_a_short_deadline_by_default():
    from api import views

    assert views.SYNC_REFRESH_DEADLINE <= 5.0


def test_sync_refresh_does_not_wait_past_its_deadline_for_a_fleet_rate_slot(staff, wire):
    """A fleet limit of one request per 30 s: the second in-request refresh would wait 29 s for a
    slot (the gate waits up to 30 s in a task); it is refused at once instead (503 with
    Retry-After). The gate's clock is pinned 1 s into a window, and its sleep advances that clock:
    a refresh that did wait would get its slot and answer 200 without taking real time."""
    from api import views
    from catalog.models import CatalogIntegration

    CatalogIntegration.objects.create(enabled=True, rate_limit_per_second=1 / 30)
    wire.add(catalog_run(KEY))
    overview()
    fake = {"now": (time.time() // 30) * 30 + 1}
    real_build_client = views.build_client

    def build_client(*args, **kwargs):
        client = real_build_client(*args, **kwargs)
        client.gate.clock = lambda: fake["now"]
        client.gate.sleep = lambda seconds: fake.update(now=fake["now"] + seconds)
        return client

    client = logged_in(staff)
    with mock.patch.object(views, "build_client", side_effect=build_client):
        assert client.post(refresh_url(KEY) + "?sync=1").status_code == 200
        response = client.post(refresh_url(KEY) + "?sync=1")
    assert response.status_code == 503, response.json()
    assert int(response["Retry-After"]) == 29
    assert "rate limit" in response.json()["error"]
    assert wire.list_requests == 1


def test_sync_refresh_refused_by_the_catalog_is_502_and_recorded(staff, wire):
    overview(marketing_url="https://keep.example/x")
    wire.before_list = lambda w: (403, {}, '{"detail": "You do not have permission."}')
    response = logged_in(staff).post(refresh_url(KEY) + "?sync=1")
    assert response.status_code == 502
    assert response.json()["retryable"] is False
    assert response.json()["overview"]["catalog_status"] == CatalogStatus.ERROR
    row = CourseOverview.objects.get(id=KEY)
    assert row.catalog_status == CatalogStatus.ERROR and "403" in row.catalog_error
    assert row.marketing_url == "https://keep.example/x"


def test_sync_refresh_without_a_catalog_configured_is_503(staff, settings):
    settings.CATALOG_API_URL = None
    overview()
    response = logged_in(staff).post(refresh_url(KEY) + "?sync=1")
    assert response.status_code == 503
    assert "CATALOG_API_URL" in response.json()["error"]


@override_switch(DISABLE_CATALOG_CALLS, active=True)
@pytest.mark.parametrize("query", ["", "?sync=1"])
def test_refresh_with_the_kill_switch_on_is_503_and_does_nothing(query, staff, wire, queued):
    overview()
    response = logged_in(staff).post(refresh_url(KEY) + query)
    assert response.status_code == 503
    assert DISABLE_CATALOG_CALLS in response.json()["error"]
    assert wire.list_requests == 0 and not queued.called


# --- GET /api/mobile/v1/users/<username>/course_enrollments/ ------------------------------------


def enroll(user, *overviews, **fields):
    return [CourseEnrollment.objects.create(user=user, course=ov, **fields) for ov in overviews]


def test_enrollments_lists_the_users_active_enrollments_with_their_overviews(learner, staff):
    active = overview(
        KEY,
        display_name="Active course",
        marketing_url="https://www.example.com/course/a",
        eligible_for_financial_aid=False,
        language="es",
        start=timezone.now(),
    )
    enroll(learner, active, mode="verified")
    enroll(learner, overview("course-v1:ApiX+Gone+2025"), is_active=False)
    enroll(staff, overview("course-v1:ApiX+Other+2025"))

    response = logged_in(learner).get(enrollments_url("learner"))

    assert response.status_code == 200
    [item] = response.json()
    assert (item["mode"], item["is_active"]) == ("verified", True)
    course = item["course"]
    assert course["id"] == KEY
    assert (course["display_name"], course["marketing_url"]) == (
        "Active course",
        "https://www.example.com/course/a",
    )
    assert (course["eligible_for_financial_aid"], course["language"]) == (False, "es")
    assert course["start"] and "end" in course
    assert course["course_about"] == "https://www.example.com/course/a"  # the marketing URL first
    # no sync internals for learners
    assert set(course) == {"id", *CONTENT_FIELDS, *CATALOG_FIELDS, "course_about"}


def test_enrollments_of_a_user_without_any_is_an_empty_list(learner):
    response = logged_in(learner).get(enrollments_url("learner"))
    assert (response.status_code, response.json()) == (200, [])


def test_staff_may_read_anyones_enrollments(learner, staff):
    enroll(learner, overview())
    response = logged_in(staff).get(enrollments_url("learner"))
    assert response.status_code == 200 and len(response.json()) == 1


def test_enrollments_with_a_token(learner):
    enroll(learner, overview())
    response = token_client(learner).get(enrollments_url("learner"))
    assert response.status_code == 200 and response.json()[0]["course"]["id"] == KEY


def test_other_users_and_anonymous_may_not_read_enrollments(learner, django_user_model):
    enroll(learner, overview())
    other = django_user_model.objects.create_user("other", password="pw")
    assert logged_in(other).get(enrollments_url("learner")).status_code == 403
    assert token_client(other).get(enrollments_url("learner")).status_code == 403
    assert APIClient().get(enrollments_url("learner")).status_code == 401


def test_enrollments_of_an_unknown_user_is_404_for_staff_403_for_others(staff, learner):
    response = logged_in(staff).get(enrollments_url("nobody"))
    assert response.status_code == 404
    assert response.json() == {"error": "no user 'nobody'"}
    # a learner cannot probe which usernames exist
    assert logged_in(learner).get(enrollments_url("nobody")).status_code == 403


def _queries_for(client, username: str, expected_items: int) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(enrollments_url(username))
    assert response.status_code == 200 and len(response.json()) == expected_items
    return len(queries.captured_queries)


@pytest.mark.parametrize("as_staff", [False, True])
def test_enrollments_cost_a_constant_number_of_queries(as_staff, learner, staff, django_user_model):
    client = logged_in(staff if as_staff else learner)
    few = django_user_model.objects.create_user("few")
    many = django_user_model.objects.create_user("many")
    enroll(few, *CourseOverviewFactory.create_batch(3))
    enroll(many, *CourseOverviewFactory.create_batch(30))
    if not as_staff:
        enroll(learner, *CourseOverviewFactory.create_batch(3))
        three = _queries_for(client, "learner", 3)
        enroll(learner, *CourseOverviewFactory.create_batch(27))
        thirty = _queries_for(client, "learner", 30)
    else:
        three, thirty = _queries_for(client, "few", 3), _queries_for(client, "many", 30)
    assert three == thirty
    assert thirty <= 4  # session, user, [the named user], the enrollments joined to their overviews


# --- GET /health/ -------------------------------------------------------------------------------


def test_health_tells_anonymous_callers_up_and_nothing_more(embedded_broker):
    overview("course-v1:H+Never+1")
    SweepRun.objects.create(status=SweepStatus.COMPLETE, finished_at=timezone.now())
    response = APIClient().get("/health/")
    assert response.status_code == 200
    assert response.json() == {"status": "up"}
    assert response["Cache-Control"] == "no-store"


def test_health_gives_staff_the_detail(embedded_broker, staff):
    overview("course-v1:H+Never+1")
    overview("course-v1:H+Failed+1", catalog_status=CatalogStatus.ERROR)
    overview("course-v1:H+Synced+1", catalog_status=CatalogStatus.OK, catalog_synced_at=timezone.now())
    finished = timezone.now() - timedelta(hours=2)
    SweepRun.objects.create(status=SweepStatus.COMPLETE, finished_at=finished - timedelta(days=1))
    SweepRun.objects.create(status=SweepStatus.COMPLETE, finished_at=finished)
    SweepRun.objects.create(status=SweepStatus.FAILED, finished_at=timezone.now())
    SweepRun.objects.create(status=SweepStatus.RUNNING)

    for client in (logged_in(staff), token_client(staff)):
        response = client.get("/health/")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "up" and body["ok"] is True
        assert body["database"] == body["cache"] == body["broker"] == {"ok": True}
        assert body["courses_never_synced"] == 2  # a first fetch that failed has never synced either
        sweep = body["last_complete_sweep"]
        assert sweep["finished_at"] == finished.isoformat()
        assert 2 * 3600 <= sweep["age_seconds"] < 2 * 3600 + 60


def test_health_gives_learners_no_detail(embedded_broker, learner):
    assert logged_in(learner).get("/health/").json() == {"status": "up"}
    assert token_client(learner).get("/health/").json() == {"status": "up"}


def test_health_without_any_complete_sweep(embedded_broker, staff):
    body = logged_in(staff).get("/health/").json()
    assert body["last_complete_sweep"] == {"finished_at": None, "age_seconds": None}
    assert body["courses_never_synced"] == 0


def test_health_ignores_bad_credentials_and_answers_anyone(embedded_broker, staff):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token stale-token")
    response = client.get("/health/")
    assert (response.status_code, response.json()) == (200, {"status": "up"})
    assert logged_in(staff).get("/health/").status_code == 200


def test_health_is_503_down_fast_when_the_broker_does_not_answer(broker, staff):
    broker("redis://127.0.0.1:1/0")  # nothing listens on port 1
    started = time.monotonic()
    anonymous = APIClient().get("/health/")
    elapsed = time.monotonic() - started
    assert (anonymous.status_code, anonymous.json()) == (503, {"status": "down"})
    assert elapsed < 3
    body = logged_in(staff).get("/health/").json()
    assert body["status"] == "down" and body["ok"] is False and body["broker"]["ok"] is False
    assert body["broker"]["error"].startswith("unreachable")
    assert "127.0.0.1" not in body["broker"]["error"]  # details go to the log
    assert body["database"] == {"ok": True} and body["courses_never_synced"] == 0


def test_health_is_503_within_its_timeout_when_the_broker_accepts_but_never_answers(broker):
    with socket.socket() as silent:  # the kernel completes the handshake; nobody ever reads or writes
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        broker(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        started = time.monotonic()
        response = APIClient().get("/health/")
        elapsed = time.monotonic() - started
    assert (response.status_code, response.json()) == (503, {"status": "down"})
    assert elapsed < health.BROKER_TIMEOUT + 1


def test_health_is_503_when_the_database_does_not_answer(embedded_broker):
    with mock.patch.object(health.connection, "cursor", side_effect=OperationalError("gone")):
        response = APIClient().get("/health/")
    assert (response.status_code, response.json()) == (503, {"status": "down"})
    with mock.patch.object(health.connection, "cursor", side_effect=OperationalError("gone")):
        report = health.health_report()
    assert report["ok"] is False and report["database"]["ok"] is False
    assert report["courses_never_synced"] is None


def test_health_is_503_when_the_cache_does_not_answer(embedded_broker, staff):
    client = logged_in(staff)  # logged in before the cache breaks (locmem here, not the session)
    with mock.patch.object(health.cache, "set", side_effect=ConnectionError("redis gone")):
        anonymous = APIClient().get("/health/")
        body = client.get("/health/").json()
    assert (anonymous.status_code, anonymous.json()) == (503, {"status": "down"})
    assert body["cache"] == {"ok": False, "error": "unreachable (ConnectionError)"}


def test_health_is_throttled_per_client_address(embedded_broker, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"catalog_refresh": "60/minute", "health": "2/minute"},
    }
    client = APIClient()
    assert [client.get("/health/").status_code for _ in range(2)] == [200, 200]
    throttled = client.get("/health/")
    assert throttled.status_code == 429 and "throttled" in throttled.json()["error"]
    # X-Forwarded-For is not trusted by default (NUM_PROXIES 0): it cannot buy a fresh count
    assert client.get("/health/", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 429
    assert client.get("/health/", REMOTE_ADDR="203.0.113.9").status_code == 200


def test_health_default_throttle_is_60_a_minute_per_address(embedded_broker):
    from api.throttling import SettingsScopedRateThrottle

    # The broker and database checks are not what is measured here: answer them at once.
    with mock.patch("api.views.health_report", return_value={"ok": True}):
        codes = [APIClient().get("/health/").status_code for _ in range(61)]
    assert codes[:60] == [200] * 60 and codes[60] == 429
    assert SettingsScopedRateThrottle().parse_rate("60/minute") == (60, 60)


@pytest.mark.parametrize("query", ["", "?sync=1"])
def test_refresh_with_the_integration_disabled_in_the_admin_is_503_and_does_nothing(
    query, staff, wire, queued
):
    from catalog.models import CatalogIntegration

    CatalogIntegration.objects.create(enabled=False)
    overview()
    response = logged_in(staff).post(refresh_url(KEY) + query)
    assert response.status_code == 503
    assert "disabled in the admin" in response.json()["error"]
    assert wire.list_requests == 0 and not queued.called
