"""The retry rule's numbers, pinned exactly: the backoff's ceiling per attempt, its floor, the
defaults, and what the in-process sweep's policy allows.

The jitter is drawn from an injected generator that answers the top (or the bottom) of the
range it is asked for, so each ceiling is observed exactly, not sampled.
"""

from __future__ import annotations

import pytest

from catalog import retry
from catalog.retry import RetryPolicy, backoff_delay, in_process_policy, next_retry
from catalog_client.errors import CatalogServerError, CatalogThrottled


class Top:
    """A jitter source that always answers the ceiling."""

    def uniform(self, low: float, high: float) -> float:
        return high


class Bottom:
    """A jitter source that always answers the floor."""

    def uniform(self, low: float, high: float) -> float:
        return low


@pytest.mark.parametrize(
    ("attempt", "ceiling"), [(-1, 1), (0, 1), (1, 2), (2, 4), (3, 8), (6, 64), (7, 120), (30, 120)]
)
def test_the_ceiling_doubles_from_one_second_up_to_two_minutes_by_default(attempt, ceiling):
    assert backoff_delay(attempt, rng=Top()) == ceiling


def test_full_jitter_reaches_down_to_no_wait_at_all():
    assert backoff_delay(5, rng=Bottom()) == 0


def test_base_and_cap_scale_the_ceiling():
    assert [backoff_delay(n, base=3, cap=20, rng=Top()) for n in range(4)] == [3, 6, 12, 20]


def test_retry_after_is_a_floor_only_when_the_catalog_sent_it():
    throttled = CatalogThrottled("429", retry_after=30)
    assert backoff_delay(0, exc=throttled, rng=Bottom()) == 30
    assert backoff_delay(10, exc=throttled, rng=Top()) == 120  # a longer backoff is kept

    class Unrelated(Exception):
        retry_after = 50  # not a catalog answer: ignored

    assert backoff_delay(0, exc=Unrelated(), rng=Bottom()) == 0
    assert backoff_delay(0, exc=CatalogServerError("503", status=503), rng=Bottom()) == 0


def test_the_in_process_policy_retries_one_less_than_the_attempts_allowed():
    assert in_process_policy(3) == RetryPolicy(base=1.0, cap=120.0, max_retries=2, max_countdown=900.0)
    assert in_process_policy(1).max_retries == 0  # one attempt: no retry at all
    assert in_process_policy(0).max_retries == 0


def test_a_spent_retry_waits_the_policys_backoff(monkeypatch):
    monkeypatch.setattr(retry.random, "uniform", lambda low, high: high)
    policy = RetryPolicy(base=3, cap=5, max_retries=5, max_countdown=900)
    error = CatalogServerError("503", status=503)
    assert next_retry(error, 0, policy).delay == 3
    assert next_retry(error, 2, policy).delay == 5


def test_a_fleet_pause_without_a_time_waits_a_second():
    pause = CatalogThrottled("fleet paused", status=None, retry_after=0)
    plan = next_retry(pause, 2, RetryPolicy(base=1, cap=10, max_retries=3, max_countdown=900))
    assert (plan.delay, plan.retries, plan.spends) == (1.0, 2, False)
