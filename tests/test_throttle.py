"""The fleet throttle, unit by unit: the shared pause after a 429 and the rate windows in the database.

The clock and the sleep are injected, so every wait is exact and no test sleeps. The sweep tests
show the throttle working across clients; these pin its arithmetic, which is what a worker fleet
and the catalog's quota depend on (one request too many is a 429 that pauses everyone).
"""

from unittest import mock

import pytest
from django.core.cache import cache
from django.db.models.query import QuerySet
from prometheus_client.parser import text_string_to_metric_families

from api import metrics as api_metrics
from catalog import throttle
from catalog.models import RateWindow
from catalog.throttle import MAX_RATE_WAIT, PAUSE_KEY, FleetThrottle, admit
from catalog_client.errors import CatalogThrottled

pytestmark = pytest.mark.django_db


class Clock:
    """A clock that only moves when the code under test sleeps (or the test says so)."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def pauses_counted(reason: str) -> float:
    """``catalog_sync_throttle_pauses_total{reason=...}`` as /metrics would report it."""
    text = api_metrics.exposition()[0].decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "catalog_sync_throttle_pauses_total" and sample.labels == {"reason": reason}:
                return sample.value
    return 0.0


def gate(rate: float = 0.0, now: float = 1000.0) -> tuple[FleetThrottle, Clock]:
    clock = Clock(now)
    return FleetThrottle(rate, clock=clock, sleep=clock.sleep), clock


# -- the shared pause --------------------------------------------------------------------------


def test_no_pause_means_no_wait():
    g, _ = gate()
    assert g.paused_for() == 0.0
    g.before_request()  # does not raise, and with no rate limit touches no rate window
    assert not RateWindow.objects.exists()


def test_a_gate_has_no_rate_limit_unless_given_one():
    clock = Clock(1000.0)
    default = FleetThrottle(clock=clock, sleep=clock.sleep)
    for _ in range(5):
        default.before_request()
    assert clock.slept == [] and not RateWindow.objects.exists()


def test_the_last_moment_of_a_pause_still_refuses():
    g, clock = gate()
    g.pause(30)
    clock.now += 29.5
    with pytest.raises(CatalogThrottled) as info:
        g.before_request()
    assert info.value.retry_after == 0.5


def test_a_pause_counts_down_with_the_clock_and_ends():
    g, clock = gate()
    g.pause(30)
    assert g.paused_for() == 30.0
    clock.now += 12.5
    assert g.paused_for() == 17.5
    clock.now += 40
    assert g.paused_for() == 0.0


def test_a_pause_is_seen_by_every_gate_and_refuses_requests_without_sending_them():
    first, clock = gate()
    second = FleetThrottle(clock=clock)
    first.pause(30)
    clock.now += 10
    with pytest.raises(CatalogThrottled) as info:
        second.before_request()
    assert info.value.status is None  # no request was sent: not the catalog's 429
    assert info.value.retry_after == 20.0
    assert str(info.value).startswith("fleet paused after a 429 for another 20s")


def test_a_shorter_pause_never_shortens_a_longer_one_and_a_longer_one_extends_it():
    g, _ = gate()
    g.pause(60)
    g.pause(10)
    assert g.paused_for() == 60.0
    g.pause(90)
    assert g.paused_for() == 90.0


def test_a_negative_pause_pauses_nobody():
    g, _ = gate()
    g.pause(-5)
    assert g.paused_for() == 0.0


def test_the_pause_hint_expires_from_the_cache_just_after_the_pause():
    """The cache entry is a hint: kept a second past the pause (rounded), at least one second."""
    g, _ = gate()
    with mock.patch.object(throttle.cache, "set", wraps=cache.set) as cache_set:
        g.pause(30)
        g.pause(90.4)
        cache.delete(PAUSE_KEY)
        g.pause(0.2)
    timeouts = [call.kwargs["timeout"] for call in cache_set.call_args_list]
    assert timeouts == [31, 91, 1]


def test_each_429_is_counted_and_pauses_for_its_retry_after_or_a_minute():
    g, clock = gate()
    assert g.throttled == 0
    counted = pauses_counted("catalog_429")
    g.on_throttled(12.0)
    assert g.throttled == 1 and g.paused_for() == 12.0
    clock.now += 13
    g.on_throttled(None)  # a 429 without Retry-After: a minute
    assert g.throttled == 2 and g.paused_for() == 60.0
    assert pauses_counted("catalog_429") == counted + 2  # the metric an operator alerts on


# -- the rate limit --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "window", "allowed"),
    [
        (1, 1, 1),
        (2, 1, 2),
        (2.5, 1, 2),
        (50, 1, 50),
        (0.5, 2, 1),
        (0.75, 2, 1),
        (0.3, 4, 1),
        (200 / 3600, 18, 1),
    ],
)
def test_a_rate_becomes_whole_windows_never_more_than_the_rate(rate, window, allowed):
    g, _ = gate(rate)
    assert (g.window, g.allowed) == (window, allowed)
    assert g.allowed / g.window <= rate


def test_requests_within_the_window_budget_go_at_once():
    g, clock = gate(rate=3, now=2000.0)
    for _ in range(3):
        g.before_request()
    assert clock.slept == [] and RateWindow.objects.get(seconds=1, number=2000).used == 3


def test_the_next_request_waits_exactly_until_the_next_window():
    g, clock = gate(rate=2, now=2000.25)
    for _ in range(3):
        g.before_request()
    assert clock.slept == [0.75]
    assert RateWindow.objects.get(seconds=1, number=2001).used == 1


def test_a_slot_exactly_max_rate_wait_away_is_waited_for_in_process():
    g, clock = gate(rate=1 / MAX_RATE_WAIT, now=30 * 1000.0)
    assert g.window == MAX_RATE_WAIT
    g.before_request()
    g.before_request()  # the next window starts exactly at the deadline: wait, do not give up
    assert clock.slept == [MAX_RATE_WAIT]


def test_a_slot_beyond_max_rate_wait_is_a_fleet_pause_for_the_time_left():
    g, clock = gate(rate=1 / 40, now=40 * 1000.0 + 4)
    g.before_request()
    with pytest.raises(CatalogThrottled) as info:
        g.before_request()
    assert clock.slept == []
    assert info.value.status is None and info.value.retry_after == 36.0
    assert str(info.value).startswith("fleet rate limit of 0.025 requests/s reached")


def test_a_fleet_that_keeps_every_window_full_gives_up_at_the_deadline_with_at_least_a_second():
    """Other workers fill every window: the gate waits window after window, then gives up once
    the next one is past MAX_RATE_WAIT, telling the task to come back in no less than a second."""
    start = 1000.5
    for number in range(1000, 1000 + int(MAX_RATE_WAIT) + 2):
        RateWindow.objects.create(seconds=1, number=number, used=1)
    clock, asked = Clock(start), []

    def oversleep(seconds):  # each wait overshoots by half a second
        asked.append(seconds)
        clock.now += seconds + 0.5

    g = FleetThrottle(1, clock=clock, sleep=oversleep)
    counted = pauses_counted("rate_limit")
    with pytest.raises(CatalogThrottled) as info:
        g.before_request()
    assert pauses_counted("rate_limit") == counted + 30  # each in-process wait is counted
    assert info.value.retry_after == 1.0  # the next window is 0.5 s away: rounded up to a second
    assert asked == [0.5] * 30 and clock.now == start + 30


def test_a_wait_is_never_shorter_than_ten_milliseconds():
    clock = Clock(1000.999999)
    g = FleetThrottle(1, clock=clock, sleep=clock.sleep)
    RateWindow.objects.create(seconds=1, number=1000, used=1)
    g.before_request()
    assert clock.slept == [0.01]


# -- admit: one guarded UPDATE -----------------------------------------------------------------


def test_admit_creates_the_window_then_counts_up_to_allowed():
    assert admit(1, 50, 2) is True
    assert admit(1, 50, 2) is True
    assert admit(1, 50, 2) is False
    assert RateWindow.objects.get(seconds=1, number=50).used == 2


def test_windows_of_another_length_are_counted_apart():
    """A rate change (18-second windows -> 1-second ones) must not spend the old kind's budget."""
    RateWindow.objects.create(seconds=18, number=5, used=0)
    assert admit(1, 5, 1)
    assert RateWindow.objects.get(seconds=1, number=5).used == 1
    assert RateWindow.objects.get(seconds=18, number=5).used == 0


def test_a_new_window_drops_the_old_ones_but_keeps_the_previous_and_other_lengths():
    for number in (5, 6, 7):
        RateWindow.objects.create(seconds=1, number=number, used=1)
    RateWindow.objects.create(seconds=18, number=1, used=1)
    assert admit(1, 8, 3)
    assert sorted(RateWindow.objects.filter(seconds=1).values_list("number", flat=True)) == [7, 8]
    assert RateWindow.objects.filter(seconds=18, number=1).exists()


def test_admit_takes_a_slot_in_a_window_another_worker_created_a_moment_ago():
    """The race: our UPDATE found no row, another worker INSERTed it, our INSERT conflicts: the
    retried UPDATE takes a slot in their window (and deletes nothing)."""
    RateWindow.objects.create(seconds=1, number=3, used=1)
    RateWindow.objects.create(seconds=1, number=9, used=1)
    real_update = QuerySet.update
    calls = []

    def first_update_misses(self, **kwargs):
        calls.append(kwargs)
        return 0 if len(calls) == 1 else real_update(self, **kwargs)

    with mock.patch.object(QuerySet, "update", first_update_misses):
        assert admit(1, 9, 3) is True
    assert len(calls) == 2
    assert RateWindow.objects.get(seconds=1, number=9).used == 2
    assert RateWindow.objects.filter(seconds=1, number=3).exists()
