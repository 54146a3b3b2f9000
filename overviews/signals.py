"""The course-published signal, defined on the LMS side.

``course_published.send(sender, course_key=<CourseKey>, **content_fields)`` is what the authoring
side fires after a publish. It is defined here, below the sync, so that the LMS-side commands
(``import_courses --publish``, ``simulate_publish``) can fire it without importing anything of
the sync. The receivers live in ``signals.receivers`` and are connected by ``SignalsConfig.ready()``;
``signals.course_published`` is the same object (the public name, which must not change).
"""

from django.dispatch import Signal

course_published = Signal()

__all__ = ["course_published"]
