"""The per-course catalog task and how a publish schedules it (coalesced, after commit)."""

from __future__ import annotations

import logging

from celery.exceptions import SoftTimeLimitExceeded
from django.db import DatabaseError
from opaque_keys import InvalidKeyError

import celeryconfig as conf
from catalog import coalesce
from catalog.connection import CatalogCallsDisabled, shared_client, why_calls_are_off
from catalog.errors import CatalogError, CatalogRetryableError, CatalogTimeout
from catalog.keys import parse_course_key
from catalog.refresh import refresh_courses
from catalog.retry import next_retry
from tasks.app import app

log = logging.getLogger("tasks.refresh")

# A pending marker outlives the window by this much, so a delayed task still finds it; if the task
# is lost altogether, the next publish after this TTL schedules a new one (and the sweep repairs).
PENDING_SLACK = 60.0


class TransientDatabaseError(CatalogRetryableError):
    """Our own database failed transiently (locked, restarting); retried like a catalog 503."""


def enqueue_refresh(course_key: str, *, countdown: float | None = None) -> bool:
    """Schedule one catalog fetch of the course unless one is already pending. True if scheduled."""
    window = conf.PUBLISH_COALESCE_WINDOW if countdown is None else countdown
    if not coalesce.claim_pending(course_key, ttl=window + PENDING_SLACK):
        return False
    refresh_course.apply_async((course_key,), countdown=window)
    return True


@app.task(
    name="catalog_sync.refresh_course",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=conf.REFRESH_SOFT_TIME_LIMIT,
    time_limit=conf.REFRESH_TIME_LIMIT,
    max_retries=None,  # counted in `retries` by catalog.retry.next_retry (pauses spend none)
    ignore_result=True,
)
def refresh_course(self, course_key: str, retries: int = 0) -> str:
    """Fetch one course's catalog data (a CCX course: its master's) and write what changed."""
    try:
        key = parse_course_key(course_key)
    except InvalidKeyError:
        log.error("catalog task: invalid course key %r dropped", course_key)
        return "invalid"
    reason = why_calls_are_off()
    if reason:
        coalesce.clear_pending(course_key)
        log.info("catalog task: %s not fetched: %s", course_key, reason)
        return "disabled"
    token = coalesce.acquire_running(course_key, ttl=conf.REFRESH_TIME_LIMIT + 5, owner=self.request.id)
    if token is None:
        # Another fetch of this course is running: come back after it (a new message, so the
        # retry budget is untouched); `pending` stays set so further publishes coalesce here.
        refresh_course.apply_async((course_key,), countdown=conf.PUBLISH_COALESCE_WINDOW)
        return "deferred"
    error: CatalogError
    try:
        coalesce.clear_pending(course_key)
        client = shared_client(timeout_budget=conf.REFRESH_SOFT_TIME_LIMIT / conf.REFRESH_HTTP_ATTEMPTS)
        outcome = refresh_courses([key], client)
    except CatalogCallsDisabled as exc:
        log.info("catalog task: %s not fetched: %s", course_key, exc)
        return "disabled"
    except SoftTimeLimitExceeded:
        error = CatalogTimeout(f"task soft time limit ({conf.REFRESH_SOFT_TIME_LIMIT}s) exceeded")
    except DatabaseError as exc:
        error = TransientDatabaseError(f"database error: {exc}")
    else:
        if outcome.not_found:
            log.info("catalog task: no overview for %s (deleted?); nothing to do", course_key)
            return "no-overview"
        if outcome.error is None:
            return "ok"
        error = outcome.error  # a permanent one is already recorded on the row
    finally:
        coalesce.release_running(course_key, token)
    plan = next_retry(error, retries, conf.REFRESH_RETRY_POLICY)
    if plan is None:
        if error.retryable:
            log.error(
                "catalog task: %s gave up after %d retries: %s (the sweep will repair it)",
                course_key,
                retries,
                error,
            )
            return "gave-up"
        return "error"
    countdown, retries = plan
    log.warning("catalog task: %s: %s; retry %d in %.1fs", course_key, error, retries, countdown)
    raise self.retry(countdown=countdown, kwargs={"retries": retries}, exc=error)
