"""A user's enrollment in a course: the row the mobile enrollments API lists with its overview."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import ExpressionWrapper, F

from overviews.models import CATALOG_FIELDS, CONTENT_FIELDS, CourseOverview

# What the learner's enrollment list sends of an enrollment, and of its course (in this order).
LISTED_ENROLLMENT_FIELDS: tuple[str, ...] = ("created", "mode", "is_active")
LISTED_COURSE_FIELDS: tuple[str, ...] = ("id", *CONTENT_FIELDS, *CATALOG_FIELDS)


class CourseEnrollmentQuerySet(models.QuerySet):
    def active_for(self, user) -> CourseEnrollmentQuerySet:
        """A user's active enrollments with their overviews, newest first: one query, however many."""
        return self.filter(user=user, is_active=True).select_related("course").order_by("-created", "-id")

    def listed_for(self, user) -> models.QuerySet:
        """A user's active enrollments, newest first, as plain tuples over one join: the
        ``LISTED_ENROLLMENT_FIELDS`` then the ``LISTED_COURSE_FIELDS`` (course id as text).

        Only the columns the list sends are read, so the timestamps it never sends (the sync
        metadata, ``modified``) are never decoded. No model instances, and the course id is read as
        plain text from the enrollment's own column (a ``CourseKeyField`` would parse a
        ``CourseKey`` per row only for the view to turn it back into the same string).
        """
        course_id_text = ExpressionWrapper(F("course_id"), output_field=models.CharField())
        course_columns = [f"course__{name}" for name in LISTED_COURSE_FIELDS[1:]]
        return (
            self.filter(user=user, is_active=True)
            .order_by("-created", "-id")
            .values_list(*LISTED_ENROLLMENT_FIELDS, course_id_text, *course_columns)
        )


class CourseEnrollment(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="course_enrollments"
    )
    # DO_NOTHING, with the database constraint kept: an overview is updated in place by publishes,
    # imports and the catalog sync, and nothing in the service deletes one. Should someone delete
    # an enrolled overview anyway (admin, shell), the database refuses rather than Django silently
    # CASCADE-deleting learners' enrollments (which are not ours to lose and cannot be recomputed).
    # DO_NOTHING also spares Django the collector's per-relation queries on every overview delete.
    course = models.ForeignKey(
        CourseOverview,
        on_delete=models.DO_NOTHING,
        db_constraint=True,
        related_name="enrollments",
    )
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    is_active = models.BooleanField(default=True)
    mode = models.CharField(max_length=100, default="audit")

    objects = CourseEnrollmentQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "course"], name="unique_enrollment_user_course"),
        ]

    def __str__(self) -> str:
        state = "active" if self.is_active else "inactive"
        return f"{self.user_id} in {self.course_id} ({self.mode}, {state})"
