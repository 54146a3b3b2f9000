"""The base class of the catalog tasks: the failure handling they share, in one place.

A task body parses its arguments, checks that catalog calls are allowed, calls one plain function
through ``guarded`` and hands a failure to ``retry_or_give_up``. That maps every failure to the
one retry rule (``catalog.retry.next_retry``) over Celery's own count of retries spent
(``request.retries``): retry with backoff, wait out a fleet pause without spending a retry, or
give up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from celery.exceptions import Retry, SoftTimeLimitExceeded
from django.db import DatabaseError

import celeryconfig as conf
from catalog.retry import RetryPlan, RetryPolicy, next_retry
from catalog_client.errors import CatalogError, CatalogRetryableError, CatalogTimeout
from tasks.app import app

log = logging.getLogger("tasks")

T = TypeVar("T")


class TransientDatabaseError(CatalogRetryableError):
    """Our own database failed transiently (locked, restarting); retried like a catalog 503."""


class CatalogTask(app.Task):
    """A task that calls the catalog: ``max_retries=None`` because the budget is the retry
    policy's, counted in ``request.retries`` (fleet pauses spend none)."""

    retry_policy: RetryPolicy = conf.REFRESH_RETRY_POLICY
    max_retries = None

    def guarded(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, with every transient failure turned into a retryable
        ``CatalogError``: the soft time limit is a timeout, a database error a transient one."""
        try:
            return fn(*args, **kwargs)
        except SoftTimeLimitExceeded as exc:
            raise CatalogTimeout(f"task soft time limit ({self.soft_time_limit}s) exceeded") from exc
        except DatabaseError as exc:
            raise TransientDatabaseError(f"database error: {exc}") from exc

    def retry_or_give_up(
        self,
        error: CatalogError,
        *,
        give_up: Callable[[], str],
        before_retry: Callable[[RetryPlan], object] | None = None,
    ) -> str:
        """Ask the retry rule about ``error``: give up (returns ``give_up()``), or call
        ``before_retry(plan)`` and send this message again after ``plan.delay`` seconds -- with
        one more retry spent, or, for a fleet pause, with the count unchanged (raises ``Retry``)."""
        plan = next_retry(error, self.request.retries or 0, self.retry_policy)
        if plan is None:
            return give_up()
        if before_retry is not None:
            before_retry(plan)
        self._again(plan, error)

    def _again(self, plan: RetryPlan, error: CatalogError) -> NoReturn:
        if plan.spends:
            raise self.retry(countdown=plan.delay, exc=error)
        request = self.request
        if request.called_directly:  # as Task.retry does when called directly (tests)
            raise error
        # ``Task.retry`` always adds one to the count: a pause sends the message itself.
        self.signature_from_request(request, countdown=plan.delay, retries=request.retries).apply_async()
        raise Retry(exc=error, when=plan.delay)
