"""GET /api/mobile/v1/users/<username>/course_enrollments/ as Open edX serves it: the full list
(the route's own shape) and the v4 paginated shape, ``course_about``, a constant number of SQL
queries at 1, 50, 500 and 2,000 enrollments, and who may read whose list.

The basic listing and permission cases are in tests/test_api.py; these add the paginated shape,
the about link, the SQL bound and byte-for-byte agreement with the DRF serializer the list used
to go through."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from opaque_keys.edx.keys import CourseKey
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from api.views import ENROLLMENTS_MAX_PAGE_SIZE, ENROLLMENTS_PAGE_SIZE
from enrollments.models import CourseEnrollment
from overviews.models import CATALOG_FIELDS, CONTENT_FIELDS, CourseOverview
from tests.test_security import PRODUCTION_ENV, run_python

pytestmark = pytest.mark.django_db

LMS = "https://lms.example.com"


def url(username: str = "learner", query: str = "") -> str:
    return f"/api/mobile/v1/users/{username}/course_enrollments/" + (f"?{query}" if query else "")


@pytest.fixture(autouse=True)
def _lms_root(settings):
    settings.LMS_ROOT_URL = LMS


@pytest.fixture
def learner(django_user_model):
    return django_user_model.objects.create_user("learner", password="pw")


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("ops", password="pw", is_staff=True)


def token_client(user) -> APIClient:
    call_command("drf_create_token", user.username, stdout=mock.Mock())
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get(user=user).key}")
    return client


def session_client(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


T0 = datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)


def enroll_many(user, n: int, *, prefix: str = "Bulk", **course_fields) -> list[str]:
    """``n`` overviews and active enrollments, created one second apart (the newest is the last
    key); returns the keys newest first, the order the API lists them in."""
    overviews = [
        CourseOverview(
            id=CourseKey.from_string(f"course-v1:{prefix}X+N{i:05d}+R"),
            display_name=f"Course {i}",
            org=f"{prefix}X",
            number=f"N{i:05d}",
            run="R",
            start=T0 + timedelta(days=i),
            **course_fields,
        )
        for i in range(n)
    ]
    CourseOverview.objects.bulk_create(overviews)
    enrollments = CourseEnrollment.objects.bulk_create(
        CourseEnrollment(user=user, course=ov, mode="verified") for ov in overviews
    )
    for i, enrollment in enumerate(enrollments):  # auto_now_add: set the order after the insert
        enrollment.created = T0 + timedelta(seconds=i)
    CourseEnrollment.objects.bulk_update(enrollments, ["created"])
    return [str(ov.id) for ov in reversed(overviews)]


# --- the full list -------------------------------------------------------------------------------


class _LearnerCourse(serializers.ModelSerializer):
    id = serializers.CharField(read_only=True)

    class Meta:
        model = CourseOverview
        fields = ("id", *CONTENT_FIELDS, *CATALOG_FIELDS)


class _Enrollment(serializers.ModelSerializer):
    """What the list used to go through, field by field: the oracle of its format."""

    course = _LearnerCourse(read_only=True)

    class Meta:
        model = CourseEnrollment
        fields = ("created", "mode", "is_active", "course")


def test_the_list_is_what_the_drf_serializer_wrote_plus_course_about(learner):
    enroll_many(learner, 3, marketing_url="https://www.example.com/c", language="fr")
    late = CourseOverview.objects.create(
        id=CourseKey.from_string("Org/Old_Style/Run"),  # an old-style key, slashes and all
        display_name="Ends",
        end=datetime(2030, 1, 1, tzinfo=UTC),  # no microseconds: none written
        enrollment_start=T0,
        eligible_for_financial_aid=False,
        invitation_only=True,
        self_paced=True,
    )
    CourseEnrollment.objects.create(user=learner, course=late, mode="audit")

    response = token_client(learner).get(url())

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    expected = _Enrollment(CourseEnrollment.objects.active_for(learner), many=True).data
    for item in expected:
        course = item["course"]
        course["course_about"] = course["marketing_url"] or f"{LMS}/courses/{course['id']}/about"
    assert response.json() == [dict(item) | {"course": dict(item["course"])} for item in expected]
    body = response.json()
    assert body[0]["course"]["id"] == "Org/Old_Style/Run"  # newest first
    assert body[0]["course"]["end"] == "2030-01-01T00:00:00Z"
    assert body[1]["created"] == "2025-03-04T05:06:09.123456Z"


def test_course_about_is_the_marketing_url_else_the_lms_about_page(learner, settings):
    [with_url] = enroll_many(learner, 1, prefix="M", marketing_url="https://www.example.com/m")
    [no_url] = enroll_many(learner, 1, prefix="N", marketing_url=None)
    [empty_url] = enroll_many(learner, 1, prefix="E", marketing_url="")
    settings.LMS_ROOT_URL = "https://courses.example.org/"  # a trailing slash is not doubled

    abouts = {
        item["course"]["id"]: item["course"]["course_about"]
        for item in token_client(learner).get(url()).json()
    }

    assert abouts == {
        with_url: "https://www.example.com/m",
        no_url: f"https://courses.example.org/courses/{no_url}/about",
        empty_url: f"https://courses.example.org/courses/{empty_url}/about",
    }


def test_the_list_leaves_out_inactive_enrollments_and_other_users(learner, staff):
    mine = enroll_many(learner, 2, prefix="Mine")
    enroll_many(staff, 2, prefix="Theirs")
    CourseEnrollment.objects.filter(course_id=mine[0]).update(is_active=False)

    ids = [item["course"]["id"] for item in token_client(learner).get(url()).json()]
    assert ids == mine[1:]
    page = token_client(learner).get(url(query="page=1")).json()
    assert (page["count"], [item["course"]["id"] for item in page["results"]]) == (1, mine[1:])


# --- the paginated shape (Open edX v4) -------------------------------------------------------------


def test_a_page_when_page_or_page_size_is_given(learner):
    keys = enroll_many(learner, 25)
    client = token_client(learner)

    first = client.get(url(query="page=1"))
    assert first.status_code == 200
    body = first.json()
    assert {k: v for k, v in body.items() if k != "results"} == {
        "count": 25,
        "num_pages": 3,
        "current_page": 1,
        "start": 0,
        "next": f"http://testserver{url(query='page=2')}",
        "previous": None,
    }
    assert [item["course"]["id"] for item in body["results"]] == keys[:ENROLLMENTS_PAGE_SIZE]
    assert set(body["results"][0]["course"]) == {"id", *CONTENT_FIELDS, *CATALOG_FIELDS, "course_about"}

    # page_size alone asks for a page too
    only_size = client.get(url(query="page_size=7")).json()
    assert (only_size["num_pages"], len(only_size["results"])) == (4, 7)


def test_following_next_walks_every_enrollment_once_newest_first(learner):
    keys = enroll_many(learner, 23)
    client = token_client(learner)
    seen, link, pages = [], url(query="page_size=5"), 0
    while link:
        body = client.get(link).json()
        seen += [item["course"]["id"] for item in body["results"]]
        pages += 1
        if body["next"]:
            assert parse_qs(urlsplit(body["next"]).query)["page_size"] == ["5"]  # kept in the links
        link = body["next"]
    assert (seen, pages) == (keys, 5)

    last = client.get(url(query="page=last&page_size=5")).json()
    assert (last["current_page"], last["start"], last["next"]) == (5, 20, None)
    assert [item["course"]["id"] for item in last["results"]] == keys[20:]
    previous = client.get(last["previous"]).json()
    assert (previous["current_page"], len(previous["results"])) == (4, 5)
    # The first page's previous link is absent; the second page's names page 1 (not a bare URL,
    # which would answer the unpaginated list).
    second = client.get(url(query="page=2")).json()
    assert parse_qs(urlsplit(second["previous"]).query) == {"page": ["1"]}


@pytest.mark.parametrize(
    ("page_size", "expected"),
    [
        ("500", ENROLLMENTS_MAX_PAGE_SIZE),  # cut to the maximum
        ("100", 100),
        ("1", 1),
        ("0", ENROLLMENTS_PAGE_SIZE),  # unreadable: the default
        ("-3", ENROLLMENTS_PAGE_SIZE),
        ("many", ENROLLMENTS_PAGE_SIZE),
        ("", ENROLLMENTS_PAGE_SIZE),
    ],
)
def test_page_size_has_a_default_and_a_maximum(learner, page_size, expected):
    enroll_many(learner, 120)
    body = token_client(learner).get(url(query=f"page_size={page_size}")).json()
    assert len(body["results"]) == expected
    assert body["num_pages"] == -(-120 // expected)


@pytest.mark.parametrize("page", ["0", "-1", "4", "two", "1.5"])
def test_a_page_that_does_not_exist_is_404(learner, page):
    enroll_many(learner, 25)
    response = token_client(learner).get(url(query=f"page={page}"))
    assert response.status_code == 404
    assert response.json()["error"].startswith("invalid page")


def test_an_empty_list_has_one_empty_page(learner):
    client = token_client(learner)
    assert client.get(url()).json() == []
    body = client.get(url(query="page=1")).json()
    assert body == {
        "count": 0,
        "num_pages": 1,
        "current_page": 1,
        "start": 0,
        "next": None,
        "previous": None,
        "results": [],
    }
    assert client.get(url(query="page=2")).status_code == 404


# --- SQL: constant however many enrollments --------------------------------------------------------


@pytest.mark.parametrize("n", [1, 50, 500, 2000])
def test_sql_is_constant_at_1_50_500_and_2000_enrollments(n, learner, staff, django_assert_num_queries):
    enroll_many(learner, n)
    as_learner, as_staff, by_session = token_client(learner), token_client(staff), session_client(learner)

    with django_assert_num_queries(2):  # the token with its user; the enrollments with their courses
        assert len(as_learner.get(url()).json()) == n
    with django_assert_num_queries(2):  # ...; the page with its total (one query)
        body = as_learner.get(url(query="page=1")).json()
        assert (len(body["results"]), body["count"]) == (min(n, ENROLLMENTS_PAGE_SIZE), n)
    with django_assert_num_queries(2):
        assert as_learner.get(url(query=f"page={-(-n // 5)}&page_size=5")).json()["count"] == n
    with django_assert_num_queries(4):  # ...; the named user; page=last counts first; the page
        body = as_staff.get(url(query=f"page=last&page_size={ENROLLMENTS_MAX_PAGE_SIZE}")).json()
        assert body["count"] == n
    with CaptureQueriesContext(connection) as queries:
        assert len(by_session.get(url()).json()) == n
    assert len(queries) == 3  # the session, its user, the list
    [listing] = [q["sql"] for q in queries.captured_queries if "enrollment" in q["sql"]]
    # only the columns sent: none of the sync metadata's timestamps, nor the rows' own bookkeeping
    for unsent in ("catalog_synced_at", "catalog_checked_at", "catalog_attempted_at", "modified"):
        assert unsent not in listing


# --- who may read ----------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["", "page=1", "page_size=5"])
def test_only_the_user_and_staff_may_read_the_list(query, learner, staff, django_user_model):
    enroll_many(learner, 2)
    other = django_user_model.objects.create_user("other", password="pw")
    assert token_client(learner).get(url(query=query)).status_code == 200
    assert session_client(staff).get(url(query=query)).status_code == 200
    assert token_client(other).get(url(query=query)).status_code == 403
    assert session_client(other).get(url(query=query)).status_code == 403
    assert APIClient().get(url(query=query)).status_code == 401
    # staff learn that a user does not exist; anyone else cannot tell
    assert session_client(staff).get(url("nobody", query)).status_code == 404
    assert token_client(other).get(url("nobody", query)).status_code == 403


def test_an_inactive_account_cannot_read_even_its_own_list(learner):
    client = token_client(learner)
    learner.is_active = False
    learner.save()
    assert client.get(url()).status_code == 401


# --- LMS_ROOT_URL: required in production -------------------------------------------------------


def test_production_refuses_to_start_without_lms_root_url(tmp_path):
    code = "import settings.production as s; print(s.LMS_ROOT_URL)"
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "LMS_ROOT_URL"}
    missing = run_python(code, tmp_path, **env, LMS_ROOT_URL="")
    assert missing.returncode != 0
    assert "LMS_ROOT_URL is not set" in missing.stderr
    given = run_python(code, tmp_path, **env, LMS_ROOT_URL="https://lms.example.com/")
    assert (given.returncode, given.stdout.strip()) == (0, "https://lms.example.com")
