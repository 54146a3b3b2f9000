"""The HTTP side (CONTRACT.md "HTTP"): the staff refresh API, the mobile enrollments API, /health/
and the admin's "Refresh from catalog" action. The catalog is mocked at the wire; the task queue is
patched only to see what was queued (no eager mode)."""

from __future__ import annotations

import socket
import time
from datetime import timedelta
from unittest import mock
from urllib.parse import quote

import pytest
import responses
from django.contrib.messages import get_messages
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
from overviews.admin import MAX_ADMIN_REFRESH
from overviews.models import CATALOG_FIELDS, CONTENT_FIELDS, SYNC_FIELDS, CatalogStatus, CourseOverview
from tasks.app import app
from tasks.refresh import refresh_course
from tests.factories import CourseOverviewFactory, catalog_run
from tests.wire import WireCatalog

pytestmark = pytest.mark.django_db

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


@pytest.fixture
def queued():
    """What the API queued; the task itself never runs here."""
    with mock.patch.object(refresh_course, "apply_async") as apply_async:
        apply_async.return_value.id = "task-123"
        yield apply_async


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
    assert response.json() == {"task_id": "task-123", "course_key": key}
    queued.assert_called_once_with((key,))  # no countdown: an ops refresh skips the coalescing window


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


def test_refresh_of_an_unknown_course_is_404(staff, queued):
    response = logged_in(staff).post(refresh_url(KEY))
    assert response.status_code == 404
    assert response.json() == {"error": f"no course overview for {KEY}", "course_key": KEY}
    assert not queued.called


def test_refresh_when_the_broker_is_down_is_503(staff, queued):
    overview()
    queued.side_effect = BrokerError("Connection refused")
    response = logged_in(staff).post(refresh_url(KEY))
    assert response.status_code == 503
    assert response.json()["error"] == "broker unavailable"


@pytest.mark.parametrize("key", KEY_STYLES)
def test_sync_refresh_answers_200_with_the_whole_overview(key, staff, wire, queued):
    master = key.replace("ccx-v1:", "course-v1:").replace("+ccx@3", "")
    wire.add(catalog_run(master, marketing_url="https://www.example.com/x", content_language="fr"))
    overview(key, display_name="Hello")
    response = logged_in(staff).post(refresh_url(key) + "?sync=1")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"id", *CONTENT_FIELDS, *CATALOG_FIELDS, *SYNC_FIELDS}
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


def test_sync_refresh_when_the_catalog_is_down_is_502_and_keeps_the_data(staff, wire):
    overview(marketing_url="https://keep.example/x", catalog_status=CatalogStatus.OK)
    wire.before_list = lambda w: (503, {}, "down for maintenance")
    response = logged_in(staff).post(refresh_url(KEY) + "?sync=1")
    assert response.status_code == 502
    body = response.json()
    assert body["error"].startswith("catalog fetch failed: CatalogServerError")
    assert body["retryable"] is True
    assert body["overview"]["marketing_url"] == "https://keep.example/x"
    row = CourseOverview.objects.get(id=KEY)
    assert (row.marketing_url, row.catalog_status) == ("https://keep.example/x", CatalogStatus.OK)


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
    assert set(course) == {"id", *CONTENT_FIELDS, *CATALOG_FIELDS}  # no sync internals for learners


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


@pytest.fixture
def broker(monkeypatch):
    """Point the Celery app at a given broker URL for one test (the env variable wins in Celery)."""

    def use(url: str) -> None:
        monkeypatch.setenv("CELERY_BROKER_URL", url)
        monkeypatch.delenv("CELERY_BROKER_WRITE_URL", raising=False)
        monkeypatch.setitem(app.conf, "broker_url", url)

    return use


@pytest.fixture
def embedded_broker(broker, tmp_path):
    """The default broker of settings.test (kombu's SQLAlchemy transport on a SQLite file)."""
    broker(f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}")


def test_health_is_200_when_the_database_and_the_broker_answer(embedded_broker):
    overview("course-v1:H+Never+1")
    overview("course-v1:H+Failed+1", catalog_status=CatalogStatus.ERROR)
    overview("course-v1:H+Synced+1", catalog_status=CatalogStatus.OK, catalog_synced_at=timezone.now())
    finished = timezone.now() - timedelta(hours=2)
    SweepRun.objects.create(status=SweepStatus.COMPLETE, finished_at=finished - timedelta(days=1))
    SweepRun.objects.create(status=SweepStatus.COMPLETE, finished_at=finished)
    SweepRun.objects.create(status=SweepStatus.FAILED, finished_at=timezone.now())
    SweepRun.objects.create(status=SweepStatus.RUNNING)

    response = APIClient().get("/health/")

    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert body["database"] == {"ok": True} and body["broker"] == {"ok": True}
    assert body["courses_never_synced"] == 2  # a first fetch that failed has never synced either
    sweep = body["last_complete_sweep"]
    assert sweep["finished_at"] == finished.isoformat()
    assert 2 * 3600 <= sweep["age_seconds"] < 2 * 3600 + 60
    assert response["Cache-Control"] == "no-store"


def test_health_without_any_complete_sweep(embedded_broker):
    body = APIClient().get("/health/").json()
    assert body["last_complete_sweep"] == {"finished_at": None, "age_seconds": None}
    assert body["courses_never_synced"] == 0


def test_health_ignores_credentials_and_answers_anyone(embedded_broker, staff):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token stale-token")
    assert client.get("/health/").status_code == 200
    assert logged_in(staff).get("/health/").status_code == 200


def test_health_is_503_fast_when_the_broker_does_not_answer(broker):
    broker("redis://127.0.0.1:1/0")  # nothing listens on port 1
    started = time.monotonic()
    response = APIClient().get("/health/")
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    body = response.json()
    assert body["ok"] is False and body["broker"]["ok"] is False
    assert body["broker"]["error"].startswith("unreachable")
    assert "127.0.0.1" not in body["broker"]["error"]  # a public endpoint: details go to the log
    assert body["database"] == {"ok": True} and body["courses_never_synced"] == 0
    assert elapsed < 3


def test_health_is_503_within_its_timeout_when_the_broker_accepts_but_never_answers(broker):
    with socket.socket() as silent:  # the kernel completes the handshake; nobody ever reads or writes
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        broker(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        started = time.monotonic()
        response = APIClient().get("/health/")
        elapsed = time.monotonic() - started
    assert response.status_code == 503 and response.json()["broker"]["ok"] is False
    assert elapsed < health.BROKER_TIMEOUT + 1


def test_health_is_503_when_the_database_does_not_answer(embedded_broker):
    with mock.patch.object(health.connection, "cursor", side_effect=OperationalError("gone")):
        response = APIClient().get("/health/")
    assert response.status_code == 503
    body = response.json()
    assert body["ok"] is False and body["database"]["ok"] is False
    assert body["courses_never_synced"] is None


# --- admin: "Refresh from catalog" --------------------------------------------------------------

CHANGELIST = "/admin/overviews/courseoverview/"


def run_action(admin_client, selected, **extra):
    data = {"action": "refresh_from_catalog", "_selected_action": selected, **extra}
    response = admin_client.post(CHANGELIST, data, follow=True)
    assert response.status_code == 200
    return [(m.level_tag, m.message) for m in get_messages(response.wsgi_request)]


def test_admin_action_queues_one_refresh_per_selected_course(admin_client, queued):
    keys = ["course-v1:Adm+A+1", "Adm/B/1", "ccx-v1:Adm+C+1+ccx@2"]
    for key in [*keys, "course-v1:Adm+NotSelected+1"]:
        overview(key)
    messages = run_action(admin_client, keys)
    assert messages == [("success", "3 course refresh(es) queued.")]
    assert sorted(call.args[0][0] for call in queued.call_args_list) == sorted(keys)
    assert all(call.kwargs == {} for call in queued.call_args_list)


@override_switch(DISABLE_CATALOG_CALLS, active=True)
def test_admin_action_with_the_kill_switch_on_queues_nothing(admin_client, queued):
    overview()
    [(level, message)] = run_action(admin_client, [KEY])
    assert level == "warning" and "disabled" in message and "nothing was queued" in message
    assert not queued.called


def test_admin_action_refuses_more_than_the_limit(admin_client, queued):
    CourseOverview.objects.bulk_create(
        CourseOverview(id=CourseKey.from_string(f"course-v1:Bulk+C{n}+1"))
        for n in range(MAX_ADMIN_REFRESH + 1)
    )
    [(level, message)] = run_action(admin_client, ["course-v1:Bulk+C0+1"], select_across="1")
    assert level == "error" and f"More than {MAX_ADMIN_REFRESH}" in message
    assert not queued.called


def test_admin_action_reports_what_was_queued_before_the_broker_failed(admin_client, queued):
    keys = ["course-v1:Adm+A+1", "course-v1:Adm+B+1"]
    for key in keys:
        overview(key)
    queued.side_effect = [mock.Mock(id="t1"), BrokerError("Connection refused")]
    [(level, message)] = run_action(admin_client, keys)
    assert level == "error" and "1 of 2" in message


def test_admin_action_is_not_offered_to_staff_without_change_permission(client, staff, queued):
    overview()
    client.force_login(staff)  # staff, but no model permissions at all
    assert (
        client.post(CHANGELIST, {"action": "refresh_from_catalog", "_selected_action": [KEY]}).status_code
        == 403
    )
    assert not queued.called


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
