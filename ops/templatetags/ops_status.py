"""``{% ops_banner %}``: the admin index's banner (what is wrong now) and its link to the status page."""

from __future__ import annotations

import logging
from datetime import datetime

from django import template
from django.db import DatabaseError

from ops.status import human_duration, problems, snapshot

register = template.Library()
log = logging.getLogger("ops.status")


@register.inclusion_tag("ops/banner.html")
def ops_banner() -> dict:
    try:
        lines = problems(snapshot())
    except DatabaseError as exc:  # the index must still open, e.g. before `migrate`
        log.warning("ops: status banner unavailable: %s", type(exc).__name__)
        lines = [f"The status could not be read ({type(exc).__name__})."]
    return {"problems": lines}


@register.filter
def duration(seconds: float | None) -> str:
    """Seconds as a reader counts them: "45 s", "12 min", "2.0 h", "3.5 days"."""
    return human_duration(seconds)


@register.filter
def isotime(value: str | None) -> str:
    """An ISO time (as the JSON feed serves it) shortened for a table: "2026-11-29 05:22 UTC"."""
    if not value:
        return "\u2013"  # an en dash: no value
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return value
