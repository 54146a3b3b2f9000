"""Backoff with full jitter, Retry-After as a lower bound: the one rule every retry loop uses."""

from __future__ import annotations

import random

from catalog.errors import CatalogError, is_retryable

__all__ = ["backoff_delay", "is_retryable"]


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
