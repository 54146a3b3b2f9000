"""Backoff with full jitter, Retry-After as a lower bound: the one rule every retry loop uses."""

from __future__ import annotations

import random
from dataclasses import dataclass

from catalog_client.errors import CatalogError, CatalogThrottled, is_retryable

__all__ = ["RetryPolicy", "backoff_delay", "is_retryable", "next_retry"]


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
    max_retries: int  # failed attempts after which a task gives up (the sweep repairs it)
    max_countdown: float  # seconds: no countdown longer, whatever Retry-After says (visibility timeout)


def next_retry(exc: BaseException, retries: int, policy: RetryPolicy) -> tuple[float, int] | None:
    """``(countdown, retries after this one)`` for a failed attempt, or None to give up.

    ``retries``: the retries already spent (the per-course task passes Celery's own
    ``request.retries``; a sweep chunk its own count). A plan whose count did not go up is a fleet
    pause: the caller sends the message again without spending a retry.

    Not retryable -> None. A fleet pause (another worker saw the 429: ``CatalogThrottled`` with
    no status, no request was sent) waits it out without spending a retry. Anything else retryable
    spends one: full-jitter backoff, the catalog's Retry-After as a floor, ``max_countdown`` as a
    ceiling (a longer throttle is then waited out as a fleet pause, still without spending retries).
    """
    if not is_retryable(exc):
        return None
    if isinstance(exc, CatalogThrottled) and exc.status is None:
        return min(float(exc.retry_after or 1.0), policy.max_countdown), retries
    if retries >= policy.max_retries:
        return None
    delay = backoff_delay(retries, base=policy.base, cap=policy.cap, exc=exc)
    return min(delay, policy.max_countdown), retries + 1
