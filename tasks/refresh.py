"""The per-course catalog task, the one way to ask for it (``request_refresh``, coalesced) and the
outbox requeue that makes sure an asked-for fetch happens even when its message was lost.

Every path that wants a course fetched by a worker -- a publish (after its commit), an ops
refresh (``refresh_course --async``, the staff API, the admin action) and the requeue -- goes
through ``_enqueue``: the ``pending`` hint coalesces requests, so 500 requests for one course
queue one task (``catalog.coalesce``). The database marker ``catalog_refresh_requested_at`` is
the record; the task clears it when its fetch completes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError
from opaque_keys import InvalidKeyError
from opaque_keys.edx.keys import CourseKey

import celeryconfig as conf
from catalog import coalesce
from catalog.connection import CatalogCallsDisabled, shared_client, why_calls_are_off
from catalog.newcourse import new_course_recheck_delay
from catalog.refresh import RefreshOutcome, failure_text, record_failure, refresh_courses
from catalog.retry import RetryPlan
from catalog_client.errors import CatalogError
from observability.metrics import counts_refreshes
from overviews.keys import parse_course_key
from overviews.models import CatalogStatus, CourseOverview
from tasks.app import app
from tasks.base import CatalogTask

log = logging.getLogger("tasks.refresh")

# A pending marker outlives the window by this much, so a delayed task still finds it; if the task
# is lost altogether, the next request after this TTL schedules a new one (and the outbox requeue
# repairs it without one).
PENDING_SLACK = 60.0
# The requeue claims `pending` for this long: a queue backlog shorter than this never makes a
# requeued course queue twice; a requeued message that is lost delays its course this long at most.
REQUEUE_PENDING_TTL = 600.0
# Markers read per query by the requeue; courses queued per tick at most (a big backlog after a
# long broker outage drains over a few ticks); markers read per tick at most (those whose fetch is
# still pending or running are read and skipped, so a backlog the workers have not reached yet
# does not stop a tick from queueing the courses behind it).
REQUEUE_BATCH = 500
REQUEUE_PER_TICK = 10_000
REQUEUE_SCAN_PER_TICK = 50_000
# After the broker refused a message, this process stops trying for this long: a publish or an
# import of many courses during an outage then costs one failed connection, not one per course.
# Their markers are in the database; the requeue queues them once the broker is back.
BROKER_RETRY_AFTER = 10.0

_broker_down_until = 0.0


@dataclass
class RefreshRequest:
    """What ``request_refresh`` did with each key (every key is in exactly one list)."""

    queued: list[CourseKey] = field(default_factory=list)  # a task is queued now
    coalesced: list[CourseKey] = field(default_factory=list)  # a fetch was already pending
    unknown: list[CourseKey] = field(default_factory=list)  # no overview: nothing recorded
    # Recorded in the outbox but not queued: the broker is unavailable. The requeue queues them
    # once it is back (within the coalescing window plus CATALOG_REFRESH_REQUEUE_INTERVAL).
    deferred: list[CourseKey] = field(default_factory=list)
    task_ids: dict[CourseKey, str] = field(default_factory=dict)  # of the queued keys
    broker_error: str = ""


def request_refresh(keys: Iterable[CourseKey], *, countdown: float = 0.0) -> RefreshRequest:
    """Ask for a worker fetch of these courses: record it (one UPDATE), then queue one task per
    course unless one is already pending. The one entry point of ops refreshes.

    Does not check whether catalog calls are allowed (callers say why nothing was queued); a task
    queued while they are off stops before the network and keeps the marker. Call it outside a
    transaction (views and commands run in autocommit): a task that ran before the caller's commit
    could not clear the marker, and the requeue would fetch the course once more.
    """
    result = RefreshRequest()
    wanted = list(dict.fromkeys(keys))
    known = set(CourseOverview.objects.filter(id__in=wanted).values_list("id", flat=True))
    result.unknown = [key for key in wanted if key not in known]
    todo = [key for key in wanted if key in known]
    coalesce.mark_requested(todo, timezone.now())
    for key in todo:
        outcome = _enqueue(str(key), countdown=countdown, pending_ttl=countdown + PENDING_SLACK)
        if outcome == "coalesced":
            result.coalesced.append(key)
        elif outcome == "deferred":
            result.deferred.append(key)
            result.broker_error = result.broker_error or _last_broker_error
        else:
            result.queued.append(key)
            result.task_ids[key] = outcome
    return result


def enqueue_refresh(course_key: str, *, countdown: float | None = None) -> bool:
    """After a publish's commit: schedule one fetch of the course a coalescing window later unless
    one is pending. True if scheduled. Never raises for the broker: the publish already recorded
    the request in the row, and the requeue queues it once the broker is back."""
    window = conf.PUBLISH_COALESCE_WINDOW if countdown is None else countdown
    outcome = _enqueue(course_key, countdown=window, pending_ttl=window + PENDING_SLACK)
    return outcome not in ("coalesced", "deferred")


_last_broker_error = ""


@counts_refreshes  # catalog_sync_refreshes_total{outcome=queued|coalesced|deferred}
def _enqueue(course_key: str, *, countdown: float, pending_ttl: float) -> str:
    """The task id when queued; "coalesced" when a fetch is pending; "deferred" when the broker
    is unavailable (one warning per outage and process; the caller's marker stays)."""
    global _broker_down_until, _last_broker_error
    if time.monotonic() < _broker_down_until:
        return "deferred"
    if not coalesce.claim_pending(course_key, ttl=pending_ttl):
        return "coalesced"
    try:
        result = refresh_course.apply_async((course_key,), countdown=countdown or None)
    except (BrokerError, OSError) as exc:
        coalesce.clear_pending(course_key)  # nothing is scheduled: the next request must try again
        _broker_down_until = time.monotonic() + BROKER_RETRY_AFTER
        _last_broker_error = f"{type(exc).__name__}: {exc}"
        log.warning(
            "catalog refresh: broker unavailable (%s); fetch of %s recorded, not queued: queued "
            "again once the broker is back (no further attempt from this process for %.0fs)",
            _last_broker_error,
            course_key,
            BROKER_RETRY_AFTER,
        )
        return "deferred"
    return result.id


def _requeue_cutoff(now: datetime) -> datetime:
    """Markers at or before this are overdue: their own enqueue (after a commit, a coalescing
    window later) had time to run and did not bring a fetch."""
    return now - timedelta(seconds=conf.PUBLISH_COALESCE_WINDOW + conf.REFRESH_REQUEUE_INTERVAL)


@app.task(
    name="catalog_sync.requeue_refreshes",
    acks_late=True,
    soft_time_limit=conf.REQUEUE_SOFT_TIME_LIMIT,
    time_limit=conf.REQUEUE_TIME_LIMIT,
    ignore_result=True,
)
def requeue_refreshes() -> str:
    """The outbox relay (beat, every CATALOG_REFRESH_REQUEUE_INTERVAL seconds): queue a fetch,
    coalesced, for every course whose refresh marker is overdue. A course whose fetch is running
    or pending is left to it; the broker unavailable stops the tick (the next one tries again)."""
    reason = why_calls_are_off()
    if reason:  # markers stay: the courses are fetched once calls are allowed again
        log.info("catalog requeue: nothing queued: %s", reason)
        return "disabled"
    queued = coalesced = 0
    for batch in coalesce.due_requests(
        _requeue_cutoff(timezone.now()), batch=REQUEUE_BATCH, limit=REQUEUE_SCAN_PER_TICK
    ):
        busy = coalesce.running(batch)
        for course_key in batch:
            if queued >= REQUEUE_PER_TICK:
                break
            if course_key in busy:
                coalesced += 1
                continue
            outcome = _enqueue(course_key, countdown=0, pending_ttl=REQUEUE_PENDING_TTL)
            if outcome == "deferred":
                return f"broker unavailable: queued {queued}"
            if outcome == "coalesced":
                coalesced += 1
            else:
                queued += 1
        if queued >= REQUEUE_PER_TICK:
            break  # the rest next tick
    if queued:
        log.warning("catalog requeue: %d overdue refresh(es) queued again (%d pending)", queued, coalesced)
    return f"queued {queued}, already pending {coalesced}"


@app.task(
    name="catalog_sync.refresh_course",
    base=CatalogTask,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=conf.REFRESH_SOFT_TIME_LIMIT,
    time_limit=conf.REFRESH_TIME_LIMIT,
    ignore_result=True,
)
def refresh_course(self: CatalogTask, course_key: str) -> str:
    """Fetch one course's catalog data (a CCX course: its master's) and write what changed.
    Failures go to the retry rule (``CatalogTask.retry_or_give_up``); giving up on a retryable
    one records it on the row (the sweep repairs it)."""
    try:
        key = parse_course_key(course_key)
    except InvalidKeyError:
        log.error("catalog task: invalid course key %r dropped", course_key)
        return "invalid"
    reason = why_calls_are_off()
    if reason:
        coalesce.clear_pending(course_key)  # the outbox marker stays: fetched once calls are back
        log.info("catalog task: %s not fetched: %s", course_key, reason)
        return "disabled"
    token = coalesce.acquire_running(course_key, ttl=conf.REFRESH_TIME_LIMIT + 5, owner=self.request.id)
    if token is None:
        # Another fetch of this course is running: come back after it (a new message, with the
        # retries spent so far); `pending` stays set so further requests coalesce here.
        refresh_course.apply_async(
            (course_key,), countdown=conf.PUBLISH_COALESCE_WINDOW, retries=self.request.retries or 0
        )
        return "deferred"
    started = timezone.now()  # requests after this moment keep their marker: they need a later fetch
    try:
        outcome = self.guarded(_fetch, key, course_key)
    except CatalogCallsDisabled as exc:
        log.info("catalog task: %s not fetched: %s", course_key, exc)
        return "disabled"
    except CatalogError as exc:
        outcome = RefreshOutcome(error=exc)
    finally:
        coalesce.release_running(course_key, token)
    if outcome.not_found:
        log.info("catalog task: no overview for %s (deleted?); nothing to do", course_key)
        return "no-overview"
    if outcome.error is None:
        coalesce.clear_requested([key], not_after=started)
        if _recheck_if_new_and_missing(course_key):
            return "missing-recheck"
        return "ok"
    error = outcome.error  # a permanent one is already recorded on the row

    def give_up() -> str:
        if error.retryable:
            record_failure([key], failure_text(error), started_at=started)
            log.error(
                "catalog task: %s gave up after %d retries: %s (recorded on the row; the sweep repairs it)",
                course_key,
                self.request.retries or 0,
                error,
            )
        coalesce.clear_requested([key], not_after=started)
        return "gave-up" if error.retryable else "error"

    def before_retry(plan: RetryPlan) -> None:
        # Requests during the wait coalesce into this retry: it fetches after them.
        coalesce.hold_pending(course_key, ttl=plan.delay + PENDING_SLACK)
        log.warning(
            "catalog task: %s: %s; %s in %.1fs",
            course_key,
            error,
            f"retry {plan.retries}" if plan.spends else "fleet paused, again (no retry spent)",
            plan.delay,
        )

    return self.retry_or_give_up(error, give_up=give_up, before_retry=before_retry)


def _fetch(key: CourseKey, course_key: str) -> RefreshOutcome:
    coalesce.clear_pending(course_key)  # requests from now on need a fetch after this one
    client = shared_client(timeout_budget=conf.REFRESH_SOFT_TIME_LIMIT / conf.REFRESH_HTTP_ATTEMPTS)
    return refresh_courses([key], client)


def _recheck_if_new_and_missing(course_key: str) -> bool:
    """A new course the catalog does not know yet: fetch it again later (``catalog.newcourse``),
    coalesced like any request, instead of leaving it missing until the next sweep."""
    row = CourseOverview.objects.filter(id=course_key).values_list("catalog_status", "created").first()
    if row is None or row[0] != CatalogStatus.MISSING:
        return False
    delay = new_course_recheck_delay(row[1], timezone.now())
    if delay is None:
        return False
    log.info("catalog task: %s is new and not in the catalog yet; looking again in %.0fs", course_key, delay)
    return enqueue_refresh(course_key, countdown=delay)
