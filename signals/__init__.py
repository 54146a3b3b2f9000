"""The course-published signal (CONTRACT.md).

``course_published.send(sender, course_key=<CourseKey>, **content_fields)`` is what the authoring
side fires after a publish. Receivers live in ``signals.receivers`` and are wired in
``OverviewsConfig.ready()``.
"""

from django.dispatch import Signal

course_published = Signal()

__all__ = ["course_published"]
