"""The one retry rule: whether a failed catalog call is tried again, and after how long.

Every caller that retries asks ``next_retry``: the per-course task and the sweep chunk task (with
Celery's own count of retries spent, ``request.retries``) and the in-process sweep of
``sync_catalog`` (its own count, per chunk). Full jitter under an exponential ceiling, the
catalog's Retry-After as a floor, ``max_countdown`` as a ceiling, and a budget of retries; a fleet
pause spends none.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import NamedTuple

from catalog_client.errors import CatalogError, CatalogThrottled, is_retryable

__all__ = ["RetryPlan", "RetryPolicy", "backoff_delay", "in_process_policy", "is_retryable", "next_retry"]


def backoff_delay(
    attempt: int,
    *,
    base: float = 1.0,
    cap: float = 120.0,
    exc: BaseException | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based).

    Full jitter (uniform over [0, min(cap, base * 2**attempt)]) spreads a fleet of retrying
    workers; a catalog's ``Retry-After`` is a floor, never shortened by the jitter.
    """
    ceiling = min(cap, base * (2 ** max(0, attempt)))
    delay = (rng or random).uniform(0, ceiling)
    retry_after = getattr(exc, "retry_after", None) if isinstance(exc, CatalogError) else None
    if retry_after:
        delay = max(delay, float(retry_after))
    return delay


@dataclass(frozen=True)
class RetryPolicy:
    base: float  # seconds: the first backoff's ceiling
    cap: float  # seconds: the largest jittered backoff
    max_retries: int  # failed attempts after which a caller gives up (the sweep repairs it)
    max_countdown: float  # seconds: no wait longer, whatever Retry-After says (visibility timeout)


# The in-process sweep's waits: shorter first steps than a task's (an operator is watching), the
# same cap and ceiling.
IN_PROCESS_BASE = 1.0
IN_PROCESS_CAP = 120.0
IN_PROCESS_MAX_COUNTDOWN = 900.0


def in_process_policy(attempts: int) -> RetryPolicy:
    """``sync_catalog``'s policy: ``attempts`` tries per chunk (the admin's ``page_attempts``), so
    ``attempts - 1`` retries."""
    return RetryPolicy(
        base=IN_PROCESS_BASE,
        cap=IN_PROCESS_CAP,
        max_retries=max(0, attempts - 1),
        max_countdown=IN_PROCESS_MAX_COUNTDOWN,
    )


class RetryPlan(NamedTuple):
    """What to do after a failed attempt that is worth another one."""

    delay: float  # seconds to wait first
    retries: int  # the retries spent once this one is under way
    spends: bool  # False: a fleet pause, waited out without spending a retry


def next_retry(exc: BaseException, retries: int, policy: RetryPolicy) -> RetryPlan | None:
    """The plan for a failed attempt, or None to give up.

    ``retries``: the retries already spent (tasks pass Celery's ``request.retries``; the
    in-process sweep its count for the chunk).

    Not retryable -> None. A fleet pause (another worker saw the 429: ``CatalogThrottled`` with
    no status, no request was sent) waits it out without spending a retry. Anything else retryable
    spends one while the budget lasts: full-jitter backoff, the catalog's Retry-After as a floor,
    ``max_countdown`` as a ceiling (a longer throttle is then waited out as a fleet pause, still
    without spending retries).
    """
    if not is_retryable(exc):
        return None
    if isinstance(exc, CatalogThrottled) and exc.status is None:
        return RetryPlan(min(float(exc.retry_after or 1.0), policy.max_countdown), retries, spends=False)
    if retries >= policy.max_retries:
        return None
    delay = backoff_delay(retries, base=policy.base, cap=policy.cap, exc=exc)
    return RetryPlan(min(delay, policy.max_countdown), retries + 1, spends=True)
