"""The one retry rule: what retries, how long it waits, and what spends the retry budget."""

import random

import pytest
from django.core.cache import cache

from catalog.models import CatalogIntegration, current_config
from catalog.retry import RetryPolicy, backoff_delay, next_retry
from catalog_client.errors import CatalogPermanentError, CatalogServerError, CatalogThrottled

POLICY = RetryPolicy(base=2, cap=120, max_retries=3, max_countdown=900)


def test_permanent_errors_are_not_retried():
    assert next_retry(CatalogPermanentError("400", status=400), 0, POLICY) is None
    assert next_retry(ValueError("bug"), 0, POLICY) is None


def test_retryable_errors_spend_the_budget_then_give_up():
    exc = CatalogServerError("503", status=503)
    retries = 0
    for _ in range(POLICY.max_retries):
        countdown, after, spends = next_retry(exc, retries, POLICY)
        assert 0 <= countdown <= POLICY.cap and spends and after == retries + 1
        retries = after
    assert retries == 3 and next_retry(exc, retries, POLICY) is None


def test_retry_after_is_a_floor_and_max_countdown_a_ceiling():
    countdown, spent, _ = next_retry(CatalogThrottled("429", retry_after=300), 0, POLICY)
    assert countdown == 300 and spent == 1
    countdown, _, _ = next_retry(CatalogThrottled("429", retry_after=3600), 0, POLICY)
    assert countdown == POLICY.max_countdown


def test_a_fleet_pause_waits_without_spending_a_retry():
    pause = CatalogThrottled("fleet paused", status=None, retry_after=42)
    assert next_retry(pause, 3, POLICY) == (42, 3, False)  # even with the budget spent


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


# --- The per-course task spends Celery's own retry count --------------------------------------
# The task runs as a worker runs it: the message's retry count in the request, and the message it
# sends for its retry captured at `apply_async` and fed back as the next delivery.

KEY = "course-v1:RetryX+R1+2025"


def _deliver(task, retries: int):
    """One delivery of the per-course message with this retry count: what the task returned, or
    the retry count of the message it sent for next time."""
    from unittest import mock

    from celery.exceptions import Retry

    task.push_request(args=(KEY,), kwargs={}, retries=retries, id="task-1", called_directly=False)
    try:
        with mock.patch.object(task, "apply_async") as apply_async:
            try:
                return task.run(KEY), None
            except Retry:
                (options,) = [c.kwargs for c in apply_async.call_args_list]
                return None, options
    finally:
        task.pop_request()


@pytest.fixture
def failing_course(catalog_settings):
    import responses
    from opaque_keys.edx.keys import CourseKey

    from tests.factories import CourseOverviewFactory
    from tests.wire import WireCatalog

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        wire = WireCatalog(rsps)
        CourseOverviewFactory(id=CourseKey.from_string(KEY), catalog_status="ok")
        yield wire


@pytest.mark.django_db
def test_each_retry_spends_one_of_celerys_count_and_the_task_gives_up_when_spent(failing_course):
    import celeryconfig as conf
    from overviews.models import CourseOverview
    from tasks.refresh import refresh_course

    failing_course.before_list = lambda w: (503, {}, "down")
    seen, retries = [], 0
    for _ in range(3 * conf.REFRESH_MAX_RETRIES):  # a count that never advanced would loop on
        returned, options = _deliver(refresh_course, retries)
        if returned is not None:
            break
        retries = options["retries"]
        seen.append(retries)
    assert returned == "gave-up"
    assert seen == list(range(1, conf.REFRESH_MAX_RETRIES + 1))
    row = CourseOverview.objects.get(id=KEY)
    assert row.catalog_status == "error" and "503" in row.catalog_error


@pytest.mark.django_db
def test_a_fleet_pause_goes_back_to_the_queue_without_spending_a_retry(failing_course):
    from unittest import mock

    from catalog.refresh import RefreshOutcome
    from tasks import refresh as refresh_tasks

    pause = CatalogThrottled("fleet paused", status=None, retry_after=7)
    with mock.patch.object(refresh_tasks, "refresh_courses", return_value=RefreshOutcome(error=pause)):
        returned, options = _deliver(refresh_tasks.refresh_course, 12)  # even with the budget spent
    assert returned is None and options["retries"] == 12 and options["countdown"] == 7
