"""Factories for both sides: overview rows (factory-boy) and catalog run payloads (dicts)."""

from __future__ import annotations

import itertools
from typing import Any

import factory
from opaque_keys.edx.keys import CourseKey

from overviews.models import CourseOverview

_counter = itertools.count(1)


class CourseOverviewFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CourseOverview

    id = factory.Sequence(lambda n: CourseKey.from_string(f"course-v1:TestX+C{n:05d}+2024_T1"))
    display_name = factory.Sequence(lambda n: f"Test course {n}")
    org = "TestX"
    number = factory.Sequence(lambda n: f"C{n:05d}")
    run = "2024_T1"


def catalog_run(key: str, **overrides: Any) -> dict[str, Any]:
    """A catalog course run as course-discovery serves it (the fields that matter, and some more)."""
    n = next(_counter)
    run = {
        "key": key,
        "uuid": f"00000000-0000-0000-0000-{n:012d}",
        "title": f"Course {n}",
        "marketing_url": f"https://www.example.com/course/course-{n}",
        "start": "2025-09-01T00:00:00Z",
        "end": "2026-06-30T23:59:00Z",
        "pacing_type": "self_paced",
        "type": "verified",
        "status": "published",
        "availability": "Current",
        "course": "TestX+C",
        "content_language": "en-us",
        "hidden": False,
        "eligible_for_financial_aid": True,
        "modified": "2025-11-02T14:03:11.512345Z",
        "seats": [],
        "programs": [],
    }
    run.update(overrides)
    return run
