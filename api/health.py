"""The health report: database, cache and broker reachable, freshness of the catalog data.

``/health/`` answers anyone ``up`` or ``down`` and shows this report to staff only; even there a
failure is reported by its exception class only, the details go to the log (prefix ``health:``).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from catalog.models import SweepRun, SweepStatus
from overviews.models import CourseOverview
from tasks.app import app

log = logging.getLogger("api.health")

# Seconds the broker gets to answer: a load balancer's probe must not hang on a dead broker.
BROKER_TIMEOUT = 2.0


def _failure(what: str, exc: BaseException) -> dict[str, Any]:
    log.warning("health: %s unreachable: %s: %s", what, type(exc).__name__, exc)
    return {"ok": False, "error": f"unreachable ({type(exc).__name__})"}


def check_database() -> dict[str, Any]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any failure means "not reachable", whatever the driver raises
        return _failure("database", exc)
    return {"ok": True}


def check_cache() -> dict[str, Any]:
    """A write and a read of one short-lived key: the markers, the lease and the throttle need both."""
    probe = f"catalog_sync:health:{uuid.uuid4().hex}"
    try:
        cache.set(probe, "ok", timeout=10)
        answered = cache.get(probe)
        cache.delete(probe)
    except Exception as exc:  # refused, timeout, missing cache table: all mean "not usable"
        return _failure("cache", exc)
    if answered != "ok":
        log.warning("health: cache did not return the value just written")
        return {"ok": False, "error": "unreadable (wrote a value, read another)"}
    return {"ok": True}


def check_broker(timeout: float = BROKER_TIMEOUT) -> dict[str, Any]:
    """One connection attempt, no retry, bounded by ``timeout`` seconds."""
    try:
        with app.connection_for_write(
            connect_timeout=timeout,
            transport_options={"socket_connect_timeout": timeout, "socket_timeout": timeout},
        ) as conn:
            conn.ensure_connection(max_retries=0, timeout=timeout)  # redis: a channel, i.e. a PING
            if conn.transport.driver_type == "sqlalchemy":
                # kombu's SQLAlchemy transport (the embedded default) connects lazily: ask it a query.
                from sqlalchemy import text

                conn.default_channel.session.execute(text("SELECT 1"))
    except Exception as exc:  # refused, DNS, timeout, auth, a bad URL: all mean "not reachable"
        return _failure("broker", exc)
    return {"ok": True}


def last_complete_sweep(now: datetime) -> dict[str, Any]:
    finished_at = (
        SweepRun.objects.filter(status=SweepStatus.COMPLETE, finished_at__isnull=False)
        .order_by("-finished_at")
        .values_list("finished_at", flat=True)
        .first()
    )
    if finished_at is None:
        return {"finished_at": None, "age_seconds": None}
    return {"finished_at": finished_at.isoformat(), "age_seconds": (now - finished_at).total_seconds()}


def courses_never_synced() -> int:
    """Overviews the catalog sync never wrote (a first fetch that failed still counts)."""
    return CourseOverview.objects.filter(catalog_synced_at__isnull=True).count()


def health_report() -> dict[str, Any]:
    """The staff's ``/health/`` body; ``ok`` is true when the database, the cache and the broker
    are reachable (the age of the last sweep is information, not a failure: a paused sweep
    schedule must not take the web process out of a load balancer)."""
    database = check_database()
    cache_state = check_cache()
    broker = check_broker()
    report: dict[str, Any] = {
        "database": database,
        "cache": cache_state,
        "broker": broker,
        "last_complete_sweep": {"finished_at": None, "age_seconds": None},
        "courses_never_synced": None,
    }
    if database["ok"]:
        try:
            report["last_complete_sweep"] = last_complete_sweep(timezone.now())
            report["courses_never_synced"] = courses_never_synced()
        except Exception as exc:  # e.g. migrations not applied: the check itself must still answer
            report["database"] = _failure("database tables", exc)
    report["ok"] = report["database"]["ok"] and cache_state["ok"] and broker["ok"]
    return report
