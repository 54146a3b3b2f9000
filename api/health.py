"""The health report: database, cache and broker reachable, freshness of the catalog data.

``/health/`` answers anyone ``up`` or ``down`` and shows this report to staff only; even there a
failure is reported by its exception class only, the details go to the log (prefix ``health:``).
Up or down is the database, the cache and the broker: what this web process needs to serve.

``/health/detail/`` (staff, a session: the admin's login) is django-health-check's view over the
same checks as ``HealthCheck`` plugins plus the sweep's freshness (``SweepFreshness``: the last
complete sweep is younger than the schedule's interval plus its expected duration). A stale sweep
turns the detail red (500) but not ``/health/``: a paused schedule or a catalog outage must not
take the web process out of its load balancer; ``/metrics`` and the alert rules watch it too.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.core.cache import cache
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable
from health_check.views import HealthCheckView

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
        "sweep_freshness": None,
    }
    if database["ok"]:
        try:
            report["last_complete_sweep"] = last_complete_sweep(timezone.now())
            report["courses_never_synced"] = courses_never_synced()
            report["sweep_freshness"] = sweep_freshness(timezone.now())
        except Exception as exc:  # e.g. migrations not applied: the check itself must still answer
            report["database"] = _failure("database tables", exc)
    report["ok"] = report["database"]["ok"] and cache_state["ok"] and broker["ok"]
    return report


# --- The sweep's freshness --------------------------------------------------------------------

# The beat schedule of the full sweep (created by catalog's data migration).
SWEEP_SCHEDULE_NAME = "catalog full sweep"
# When the schedule row is missing or is not an interval (a crontab): the migration's default.
DEFAULT_SWEEP_INTERVAL = timedelta(hours=24)
_PERIOD_SECONDS = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1, "microseconds": 1e-6}


def sweep_interval() -> timedelta:
    """The interval of the beat PeriodicTask "catalog full sweep" (editable in the admin)."""
    task = PeriodicTask.objects.select_related("interval").filter(name=SWEEP_SCHEDULE_NAME).first()
    if task is None or task.interval is None:
        return DEFAULT_SWEEP_INTERVAL
    return timedelta(seconds=task.interval.every * _PERIOD_SECONDS.get(task.interval.period, 1))


def expected_sweep_duration() -> timedelta:
    """The last complete run's duration, at least HEALTH_SWEEP_EXPECTED_DURATION seconds."""
    floor = timedelta(seconds=settings.HEALTH_SWEEP_EXPECTED_DURATION)
    last = (
        SweepRun.objects.filter(status=SweepStatus.COMPLETE, finished_at__isnull=False)
        .order_by("-finished_at")
        .values_list("started_at", "finished_at")
        .first()
    )
    if last is None:
        return floor
    return max(floor, last[1] - last[0])


def sweep_freshness(now: datetime) -> dict[str, Any]:
    """``ok`` when the last complete sweep finished within interval + expected duration of now."""
    allowed = sweep_interval() + expected_sweep_duration()
    last = last_complete_sweep(now)
    age = last["age_seconds"]
    return {
        "ok": age is not None and age <= allowed.total_seconds(),
        "age_seconds": age,
        "allowed_seconds": allowed.total_seconds(),
    }


# --- django-health-check plugins (the staff detail) ---------------------------------------------


class _Check(HealthCheck):
    """A check of this module as a django-health-check plugin. Runs on the request's thread
    (``thread_sensitive``): the same database connection as the view, as in a sync view."""

    def probe(self) -> dict[str, Any]:
        raise NotImplementedError

    async def run(self) -> None:
        result = await sync_to_async(self.probe, thread_sensitive=True)()
        if not result["ok"]:
            raise ServiceUnavailable(result.get("error") or "failed")

    def __repr__(self) -> str:
        return type(self).__name__


class Database(_Check):
    def probe(self) -> dict[str, Any]:
        return check_database()


class Cache(_Check):
    def probe(self) -> dict[str, Any]:
        return check_cache()


class Broker(_Check):
    """A connection to the broker (no worker needed: the web process only sends)."""

    timeout = timedelta(seconds=BROKER_TIMEOUT + 1)

    def probe(self) -> dict[str, Any]:
        return check_broker()


class SweepFreshness(_Check):
    def probe(self) -> dict[str, Any]:
        state = sweep_freshness(timezone.now())
        if state["age_seconds"] is None:
            return {"ok": False, "error": "no complete sweep yet"}
        if not state["ok"]:
            return {
                "ok": False,
                "error": f"last complete sweep {state['age_seconds']:.0f}s ago, "
                f"allowed {state['allowed_seconds']:.0f}s (schedule interval + expected duration)",
            }
        return state


CHECKS = (Database, Cache, Broker, SweepFreshness)


class DetailView(HealthCheckView):
    """django-health-check's page (HTML; JSON with ``?format=json`` or ``Accept``): 200 when
    every check passes, else 500."""

    checks = CHECKS


# Staff only (the admin's login page for anyone else): the detail names what is broken.
detail_view = staff_member_required(DetailView.as_view())
