"""The one retry rule: what retries, how long it waits, and what spends the retry budget."""

import random

import pytest
from django.core.cache import cache

from catalog.errors import CatalogPermanentError, CatalogServerError, CatalogThrottled
from catalog.models import CatalogIntegration, current_config
from catalog.retry import RetryPolicy, backoff_delay, next_retry

POLICY = RetryPolicy(base=2, cap=120, max_retries=3, max_countdown=900)


def test_permanent_errors_are_not_retried():
    assert next_retry(CatalogPermanentError("400", status=400), 0, POLICY) is None
    assert next_retry(ValueError("bug"), 0, POLICY) is None


def test_retryable_errors_spend_the_budget_then_give_up():
    exc = CatalogServerError("503", status=503)
    retries = 0
    for _ in range(POLICY.max_retries):
        countdown, retries = next_retry(exc, retries, POLICY)
        assert 0 <= countdown <= POLICY.cap
    assert retries == 3 and next_retry(exc, retries, POLICY) is None


def test_retry_after_is_a_floor_and_max_countdown_a_ceiling():
    countdown, spent = next_retry(CatalogThrottled("429", retry_after=300), 0, POLICY)
    assert countdown == 300 and spent == 1
    countdown, _ = next_retry(CatalogThrottled("429", retry_after=3600), 0, POLICY)
    assert countdown == POLICY.max_countdown


def test_a_fleet_pause_waits_without_spending_a_retry():
    pause = CatalogThrottled("fleet paused", status=None, retry_after=42)
    assert next_retry(pause, 3, POLICY) == (42, 3)  # even with the budget spent


def test_backoff_is_full_jitter_under_an_exponential_ceiling():
    rng = random.Random(7)
    samples = [backoff_delay(4, base=1, cap=10, rng=rng) for _ in range(500)]
    assert max(samples) <= 10 and min(samples) >= 0
    assert 3 < sum(samples) / len(samples) < 7  # uniform over [0, min(10, 16)]


@pytest.mark.django_db
def test_current_config_sees_an_admin_change_that_the_thread_cache_would_hide():
    CatalogIntegration.objects.create(enabled=True, page_size=10)
    assert current_config().page_size == 10
    # the admin, in another process, saves a new row: its save() clears the shared cache tier...
    CatalogIntegration.objects.bulk_create([CatalogIntegration(enabled=True, page_size=250)])
    cache.clear()
    # ...but not this worker's per-thread copy, which config_models alone would keep forever
    assert CatalogIntegration.current().page_size == 10
    assert current_config().page_size == 250
