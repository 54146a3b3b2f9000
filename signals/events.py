"""The event-bus door of the publish core: Studio's ``COURSE_CATALOG_INFO_CHANGED``.

Studio sends this openedx-events signal after every course publish; with the event bus on, it
reaches this service through ``manage.py consume_events`` (``signals.consumer``), which emits it
here in-process. The receiver maps ``catalog_info`` onto the overview's content fields and hands
them to ``signals.publish.record_publish`` with the event's metadata time: the same write, kill
switch and coalesced refresh as ``course_published``. The time orders the writes: the bus
delivers at least once, possibly late, and a stream may be replayed from its start; an event at
or before the stored one changes nothing (logged and counted).
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import receiver
from openedx_events.content_authoring.data import CourseCatalogData
from openedx_events.content_authoring.signals import COURSE_CATALOG_INFO_CHANGED
from openedx_events.data import EventsMetadata

from observability.metrics import count_event
from signals.publish import Outcome, record_publish

log = logging.getLogger("signals.events")

# CourseScheduleData.pacing: "self" or "instructor" (older producers spelled them out).
_SELF_PACED = {"self": True, "self_paced": True, "instructor": False, "instructor_paced": False}


def content_from_catalog_info(info: CourseCatalogData) -> dict[str, Any]:
    """The overview content fields an event carries. Org, number and run come from the key (the
    only place the event has them); a pacing value this service does not know leaves
    ``self_paced`` as stored."""
    key = info.course_key
    schedule = info.schedule_data
    content: dict[str, Any] = {
        "display_name": info.name or "",
        "org": key.org,
        "number": key.course,
        "run": key.run,
        "start": schedule.start,
        "end": schedule.end,
        "enrollment_start": schedule.enrollment_start,
        "enrollment_end": schedule.enrollment_end,
        "hidden": bool(info.hidden),
        "invitation_only": bool(info.invitation_only),
    }
    pacing = (schedule.pacing or "").strip().lower()
    if pacing in _SELF_PACED:
        content["self_paced"] = _SELF_PACED[pacing]
    else:
        log.warning("event bus: %s: unknown pacing %r; self_paced left as stored", key, schedule.pacing)
    return content


@receiver(COURSE_CATALOG_INFO_CHANGED, dispatch_uid="signals.events.catalog_info_changed")
def catalog_info_changed(
    sender: Any, catalog_info: CourseCatalogData, metadata: EventsMetadata, **kwargs: Any
) -> Outcome:
    """Apply one ``COURSE_CATALOG_INFO_CHANGED`` event: content in place (created when new), the
    event time with it, then the course's coalesced catalog refresh after the commit."""
    outcome = record_publish(
        catalog_info.course_key, content_from_catalog_info(catalog_info), event_time=metadata.time
    )
    count_event(outcome.value)
    if outcome in (Outcome.IGNORED_STALE, Outcome.IGNORED_DUPLICATE):
        log.info(
            "event bus: %s: event %s of %s ignored (%s): the stored content is from a later or this event",
            catalog_info.course_key,
            metadata.id,
            metadata.time.isoformat(),
            outcome.value,
        )
    else:
        log.info(
            "event bus: %s: event %s of %s %s (content in place; the catalog refresh follows the commit)",
            catalog_info.course_key,
            metadata.id,
            metadata.time.isoformat(),
            outcome.value,
        )
    return outcome


__all__ = ["catalog_info_changed", "content_from_catalog_info"]
