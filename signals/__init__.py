"""Receivers of ``course_published``: update the overview in place, then enqueue the catalog fetch.

``signals.course_published`` is the public name of the signal (it must not change); the object
itself is defined on the LMS side (``overviews.signals``), so that firing it needs nothing of the
sync. The receivers (``signals.receivers``) are connected by this Django app's
``SignalsConfig.ready()``.
"""

from overviews.signals import course_published

__all__ = ["course_published"]
