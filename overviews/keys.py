"""Course keys are parsed once, at the edge; invalid keys never reach the core."""

from __future__ import annotations

from collections.abc import Iterable

from django.core.management.base import CommandError
from opaque_keys import InvalidKeyError
from opaque_keys.edx.keys import CourseKey

EXIT_INVALID_INPUT = 2


def parse_course_key(raw: str) -> CourseKey:
    """A ``CourseKey`` (course-v1, old slash style or ccx-v1), or ``InvalidKeyError``."""
    if not isinstance(raw, str) or not raw.strip() or len(raw) > 255:
        raise InvalidKeyError(CourseKey, raw)
    return CourseKey.from_string(raw.strip())


def parse_keys_or_exit(raws: Iterable[str]) -> list[CourseKey]:
    """Every key parsed, or a ``CommandError`` naming each invalid one (exit status 2)."""
    keys, bad = [], []
    for raw in raws:
        try:
            keys.append(parse_course_key(raw))
        except InvalidKeyError:
            bad.append(raw)
    if bad:
        raise CommandError(
            "invalid course key(s): " + ", ".join(repr(b) for b in bad), returncode=EXIT_INVALID_INPUT
        )
    return keys
