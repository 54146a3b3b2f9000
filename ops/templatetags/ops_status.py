"""``{% ops_banner %}``: the admin index's banner (what is wrong now) and its link to the status page."""

from __future__ import annotations

import logging

from django import template
from django.db import DatabaseError

from ops.status import problems, snapshot

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
