"""When to look again for a new course the catalog does not know yet.

course-discovery creates a course run from the same publish event that reaches this service,
after its own processing delay (60 s by default): the first fetch after a new course's first
publish usually finds it ``missing``. Rather than leave it so until the next daily sweep, the
per-course task asks again, waiting about as long as the course has existed: at least
``FIRST_RECHECK`` seconds, doubling from there (60, 120, 240, 480 s...), at most ``MAX_RECHECK``,
and only while the course is new: created less than ``CATALOG_NEW_COURSE_WINDOW`` seconds ago
(default 3600, from the environment; ``CATALOG_NEW_COURSE_FIRST_RECHECK`` moves the first step,
for a catalog with another processing delay). An older course that is missing stays missing
until it is published again or the sweep finds it.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings

FIRST_RECHECK = 60.0  # course-discovery's default processing delay
MAX_RECHECK = 600.0  # about 10 minutes between looks at most


def new_course_window() -> float:
    """Seconds after its creation during which a missing course is looked for again."""
    return float(settings.CATALOG_NEW_COURSE_WINDOW)


def recheck_delay(
    created: datetime,
    now: datetime,
    *,
    window: float,
    first: float = FIRST_RECHECK,
    cap: float = MAX_RECHECK,
) -> float | None:
    """Seconds until the next fetch of a course found missing, or None to leave it to the sweep.

    The delay is the course's age, clamped to [first, cap]: each look then comes about twice as
    late as the one before (a count kept nowhere: the row's creation time is enough).
    """
    age = max(0.0, (now - created).total_seconds())
    if age >= window:
        return None
    return min(max(age, first), cap)


def new_course_recheck_delay(created: datetime, now: datetime) -> float | None:
    """``recheck_delay`` with the configured window and first step."""
    return recheck_delay(
        created,
        now,
        window=new_course_window(),
        first=float(getattr(settings, "CATALOG_NEW_COURSE_FIRST_RECHECK", FIRST_RECHECK)),
    )


__all__ = ["FIRST_RECHECK", "MAX_RECHECK", "new_course_recheck_delay", "new_course_window", "recheck_delay"]
