"""A user's enrollment in a course: the row the mobile enrollments API lists with its overview."""

from __future__ import annotations

from django.conf import settings
from django.db import connections, models
from django.db.models import ExpressionWrapper, F, Func
from django.db.models.expressions import RawSQL

from overviews.models import CATALOG_FIELDS, CONTENT_FIELDS, CourseOverview

# What the learner's enrollment list sends of an enrollment, and of its course (in this order).
LISTED_ENROLLMENT_FIELDS: tuple[str, ...] = ("created", "mode", "is_active")
LISTED_COURSE_FIELDS: tuple[str, ...] = ("id", *CONTENT_FIELDS, *CATALOG_FIELDS)


class IsoUtcText(Func):
    """A timestamp column as the JSON text DRF wrote for it, made by the database:
    ``2025-01-06T09:30:00.000005Z``, or without the fraction when it is zero (``isoformat``'s rule).

    Why: Django's PostgreSQL backend decodes a ``timestamptz`` with a loader written in Python
    (it subclasses psycopg's to set the time zone, which bypasses psycopg's C loader): about 5 µs
    a value, 2,500 values in a 500-enrollment list, most of the request. PostgreSQL formats in C.
    SQLite stores Django's datetimes as UTC text already, ``YYYY-MM-DD HH:MM:SS[.ffffff]``.
    NULL stays NULL on both. (``.000000`` can only be the fraction: ``replace`` is half the cost of
    a regular expression over 2,500 values.)
    """

    output_field = models.CharField()

    def as_postgresql(self, compiler, connection, **extra_context):
        return self.as_sql(
            compiler,
            connection,
            template=(
                "(replace(to_char(%(expressions)s AT TIME ZONE 'UTC', "
                "'YYYY-MM-DD\"T\"HH24:MI:SS.US'), '.000000', '') || 'Z')"
            ),
            **extra_context,
        )

    def as_sqlite(self, compiler, connection, **extra_context):
        return self.as_sql(
            compiler, connection, template="(REPLACE(%(expressions)s, ' ', 'T') || 'Z')", **extra_context
        )


# Databases whose IsoUtcText is written above; elsewhere the datetimes are decoded as usual (the
# JSON encoder writes them in the same format).
_TIMESTAMPS_AS_TEXT = frozenset({"postgresql", "sqlite"})


class CourseEnrollmentQuerySet(models.QuerySet):
    def active_for(self, user) -> CourseEnrollmentQuerySet:
        """A user's active enrollments with their overviews, newest first: one query, however many."""
        return self.filter(user=user, is_active=True).select_related("course").order_by("-created", "-id")


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


_LISTINGS: dict[str, models.QuerySet] = {}


def _listing(using: str) -> models.QuerySet:
    """The listing's query without its user, built once per database: the ``values_list`` with
    its expressions costs more to build than to clone and filter."""
    if using not in _LISTINGS:
        as_text = connections[using].vendor in _TIMESTAMPS_AS_TEXT

        def column(name: str, model: type[models.Model], path: str = ""):
            if as_text and isinstance(model._meta.get_field(name), models.DateTimeField):
                return IsoUtcText(F(path + name))
            return path + name

        _LISTINGS[using] = (
            CourseEnrollment.objects.using(using)
            .filter(is_active=True)
            .order_by("-created", "-id")
            .values_list(
                *(column(name, CourseEnrollment) for name in LISTED_ENROLLMENT_FIELDS),
                ExpressionWrapper(F("course_id"), output_field=models.CharField()),
                *(column(name, CourseOverview, "course__") for name in LISTED_COURSE_FIELDS[1:]),
            )
        )
    return _LISTINGS[using]


def _active(user, using: str) -> models.QuerySet:
    return CourseEnrollment.objects.using(using).filter(user_id=user.pk, is_active=True)


def listed_enrollments(user, *, using: str = "default") -> models.QuerySet:
    """A user's active enrollments, newest first, as plain tuples over one join: the
    ``LISTED_ENROLLMENT_FIELDS``, then the ``LISTED_COURSE_FIELDS`` (the course id as text).

    Only the columns the list sends are read, so the timestamps it never sends (the sync metadata,
    ``modified``) are never decoded. No model instances, and the course id is read as plain text
    from the enrollment's own column (a ``CourseKeyField`` would parse a ``CourseKey`` per row only
    for the view to turn it back into the same string). Timestamps arrive as their final JSON text
    (``IsoUtcText``).
    """
    return _listing(using).filter(user_id=user.pk)


def listed_page(user, start: int, size: int, *, using: str = "default") -> models.QuerySet:
    """One page of ``listed_enrollments`` (``size`` rows from ``start``), each row followed by
    the user's number of active enrollments in all: one query, whatever the page or the total.

    The page's ids are chosen first (a subquery on the enrollment table alone, ``LIMIT``), so the
    join and the timestamps' text are made for the page's rows only, not for every enrollment
    before the limit; the total is an uncorrelated subquery, counted once. Both are written as
    SQL (``_PAGE_IDS``, ``_TOTAL``): compiling them as ORM subqueries cost more CPU than the rest
    of the request.
    """
    table = CourseEnrollment._meta.db_table
    # Values are parameters; the only text put in is the model's own table name.
    page_ids = RawSQL(_PAGE_IDS.format(table=table), (user.pk, size, start))  # noqa: S611
    total = RawSQL(_TOTAL.format(table=table), (user.pk,), output_field=models.IntegerField())  # noqa: S611
    return _listing(using).filter(pk__in=page_ids).annotate(total=total)


# The same filter and order as ``_listing`` (is_active; created, id descending), on the enrollment
# table alone. Column names are the model's own (``CourseEnrollment``'s fields, not renamed).
_PAGE_IDS = (
    "SELECT id FROM {table} WHERE user_id = %s AND is_active"
    " ORDER BY created DESC, id DESC LIMIT %s OFFSET %s"
)
_TOTAL = "SELECT COUNT(*) FROM {table} WHERE user_id = %s AND is_active"


def count_active(user, *, using: str = "default") -> int:
    """The user's number of active enrollments."""
    return _active(user, using).count()
