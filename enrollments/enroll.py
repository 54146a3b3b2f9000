"""Enrolling a user in courses (the ``enroll`` command; demos and tests)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction
from opaque_keys.edx.keys import CourseKey

from enrollments.models import CourseEnrollment
from overviews.models import CourseOverview


class UnknownCourses(LookupError):
    """Some keys name no course overview; ``keys`` lists them."""

    def __init__(self, keys: Sequence[CourseKey]) -> None:
        super().__init__("no course overview for " + ", ".join(str(k) for k in keys))
        self.keys = list(keys)


@dataclass
class EnrollResult:
    user_created: bool = False
    enrolled: int = 0
    reactivated: int = 0
    unchanged: int = 0

    def as_line(self) -> str:
        return (
            f"user_created={int(self.user_created)} enrolled={self.enrolled} "
            f"reactivated={self.reactivated} unchanged={self.unchanged}"
        )


def enroll(username: str, keys: Sequence[CourseKey], *, mode: str = "audit") -> EnrollResult:
    """Create the user if needed (unusable password) and give it an active enrollment in each course.

    Idempotent: an active enrollment is left alone, an inactive one is reactivated (its mode kept).
    Every course must have an overview, or ``UnknownCourses`` is raised and nothing is written.
    """
    keys = list(dict.fromkeys(keys))
    found = set(CourseOverview.objects.filter(id__in=keys).values_list("id", flat=True))
    missing = [key for key in keys if key not in found]
    if missing:
        raise UnknownCourses(missing)
    result = EnrollResult()
    with transaction.atomic():
        user_model = get_user_model()
        user, result.user_created = user_model.objects.get_or_create(username=username)
        if result.user_created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        existing = {e.course_id: e for e in CourseEnrollment.objects.filter(user=user, course_id__in=keys)}
        for key in keys:
            enrollment = existing.get(key)
            if enrollment is None:
                CourseEnrollment.objects.create(user=user, course_id=key, mode=mode)
                result.enrolled += 1
            elif not enrollment.is_active:
                enrollment.is_active = True
                enrollment.save(update_fields=["is_active"])
                result.reactivated += 1
            else:
                result.unchanged += 1
    return result
