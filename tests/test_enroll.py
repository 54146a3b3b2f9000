"""``manage.py enroll USERNAME KEY [KEY ...]``: idempotent, nothing half-written."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from opaque_keys.edx.keys import CourseKey

from enrollments.models import CourseEnrollment
from tests.factories import CourseOverviewFactory

pytestmark = pytest.mark.django_db

A, B = "course-v1:EnrX+A+2025", "EnrX/B/2025"


@pytest.fixture
def courses():
    return [CourseOverviewFactory(id=CourseKey.from_string(key)) for key in (A, B)]


def enroll(*args: str) -> str:
    out = io.StringIO()
    call_command("enroll", *args, stdout=out)
    return out.getvalue()


def active_keys(username: str) -> set[str]:
    return {
        str(key)
        for key in CourseEnrollment.objects.filter(user__username=username, is_active=True).values_list(
            "course_id", flat=True
        )
    }


def test_creates_the_user_with_an_unusable_password_and_enrolls_it(courses):
    out = enroll("newbie", A, B)
    assert "enroll: user=newbie user_created=1 enrolled=2 reactivated=0 unchanged=0" in out
    user = get_user_model().objects.get(username="newbie")
    assert not user.has_usable_password()
    assert active_keys("newbie") == {A, B}
    assert set(CourseEnrollment.objects.values_list("mode", flat=True)) == {"audit"}


def test_is_idempotent(courses):
    enroll("newbie", A, B)
    out = enroll("newbie", A, B, A)
    assert "user_created=0 enrolled=0 reactivated=0 unchanged=2" in out
    assert CourseEnrollment.objects.count() == 2


def test_reactivates_an_inactive_enrollment_and_keeps_an_existing_users_password(courses):
    user = get_user_model().objects.create_user("alice", password="secret")
    CourseEnrollment.objects.create(user=user, course=courses[0], is_active=False, mode="verified")
    out = enroll("alice", A, B)
    assert "user_created=0 enrolled=1 reactivated=1 unchanged=0" in out
    assert active_keys("alice") == {A, B}
    assert CourseEnrollment.objects.get(user=user, course=courses[0]).mode == "verified"
    user.refresh_from_db()
    assert user.check_password("secret")


def test_mode_option(courses):
    enroll("bob", A, "--mode", "verified")
    assert CourseEnrollment.objects.get().mode == "verified"


def test_an_invalid_key_exits_2_and_writes_nothing(courses):
    with pytest.raises(CommandError, match="invalid course key") as caught:
        enroll("newbie", A, "not a key")
    assert caught.value.returncode == 2
    assert not get_user_model().objects.filter(username="newbie").exists()
    assert not CourseEnrollment.objects.exists()


def test_a_key_without_an_overview_exits_2_names_it_and_writes_nothing(courses):
    unknown = "course-v1:EnrX+Nope+2025"
    with pytest.raises(CommandError, match=r"no course overview for course-v1:EnrX\+Nope\+2025") as caught:
        enroll("newbie", A, unknown)
    assert caught.value.returncode == 2
    assert "nothing written" in str(caught.value)
    assert not get_user_model().objects.filter(username="newbie").exists()
    assert not CourseEnrollment.objects.exists()


def test_an_invalid_username_exits_2(courses):
    with pytest.raises(CommandError, match="invalid username") as caught:
        enroll("no spaces allowed", A)
    assert caught.value.returncode == 2
    assert not get_user_model().objects.exists()


def test_help_documents_the_exit_statuses(capsys):
    with pytest.raises(SystemExit):
        call_command("enroll", "--help")
    help_text = " ".join(capsys.readouterr().out.split())
    assert "2 on an invalid username or course key, or on a key that names no course overview" in help_text
