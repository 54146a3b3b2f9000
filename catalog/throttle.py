"""Fleet-wide catalog quota: one shared pause on a 429, and a shared requests-per-second limit.

Shared by every worker process, so that they obey the same pause and share the same budget
instead of each hammering the catalog on its own:

- the rate window's counter is a database row (``catalog.models.RateWindow``), admitted with one
  atomic ``UPDATE ... SET used = used + 1 WHERE used < allowed``. It was a cache ``incr``: atomic
  on Redis, but a read then a write on Django's database cache (the embedded default), so two
  workers could both take the last slot, and at a 200/hour quota one request too many is a 429
  whose Retry-After pauses the fleet for up to an hour. It costs one or two small queries per
  catalog request, and only while a rate limit is set (``rate_limit_per_second`` > 0).
- the pause stays in the cache, as a hint: a lost or raced pause (two workers set it; the
  database cache's ``set`` racing; Redis evicting it) costs at most one more request answered
  429, which sets it again. Nothing is decided by it that a 429 would not decide anyway.

- ``pause(seconds)``: after a 429, nobody calls the catalog until its Retry-After has passed.
- ``before_request()``: called by the client before every catalog request. While paused it
  raises ``CatalogThrottled`` with the time left (the caller retries after it, like a 429, without
  spending a request). Under the rate limit it waits (briefly) for the next one-second slot.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import F

from catalog.models import RateWindow
from catalog_client.errors import CatalogThrottled
from observability.metrics import count_throttle_pause

log = logging.getLogger("catalog.throttle")

PAUSE_KEY = "catalog_sync:throttle:paused_until"
# Seconds a request may wait in-process for a rate slot (a 200/hour quota has 18-second slots);
# beyond that it raises CatalogThrottled and the task waits the rest out as a fleet pause.
MAX_RATE_WAIT = 30.0


class FleetThrottle:
    """The client's request gate (``CatalogClient(gate=...)``)."""

    def __init__(
        self,
        rate_per_second: float = 0.0,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate_per_second
        self.clock = clock
        self.sleep = sleep
        self.throttled = 0  # 429s seen by this gate's client

    # -- the shared pause ---------------------------------------------------------------------

    def paused_for(self) -> float:
        until = cache.get(PAUSE_KEY)
        return max(0.0, float(until) - self.clock()) if until else 0.0

    def pause(self, seconds: float) -> None:
        """Pause every worker for ``seconds`` (never shortens a longer pause already set)."""
        until = self.clock() + max(0.0, seconds)
        current = cache.get(PAUSE_KEY)
        if current is None or float(current) < until:
            cache.set(PAUSE_KEY, until, timeout=max(1, round(seconds) + 1))
            log.warning("catalog throttle: catalog answered 429; fleet paused for %.0fs", seconds)

    # -- the client hooks ---------------------------------------------------------------------

    def before_request(self) -> None:
        left = self.paused_for()
        if left > 0:
            raise CatalogThrottled(
                f"fleet paused after a 429 for another {left:.0f}s", status=None, retry_after=left
            )
        if self.rate > 0:
            self._take_slot()

    def on_throttled(self, retry_after: float | None) -> None:
        self.throttled += 1
        count_throttle_pause("catalog_429")
        self.pause(retry_after if retry_after is not None else 60.0)

    # -- the rate limit: fixed windows counted in the database ---------------------------------
    # A rate of r requests/s is enforced as `allowed` requests per window of `window` seconds:
    # r >= 1 -> 1-second windows of floor(r); r < 1 -> one request per ceil(1/r) seconds (0.055/s,
    # the catalog's 200/hour, is one request every 18 s).

    @property
    def window(self) -> int:
        return 1 if self.rate >= 1 else math.ceil(1 / self.rate)

    @property
    def allowed(self) -> int:
        return max(1, math.floor(self.rate * self.window))

    def _take_slot(self) -> None:
        window, allowed = self.window, self.allowed
        deadline = self.clock() + MAX_RATE_WAIT
        while True:
            now = self.clock()
            slot = int(now // window)
            if admit(window, slot, allowed):
                return
            next_slot = (slot + 1) * window
            if next_slot > deadline:
                raise CatalogThrottled(
                    f"fleet rate limit of {self.rate:g} requests/s reached",
                    status=None,
                    retry_after=max(1.0, next_slot - now),
                )
            count_throttle_pause("rate_limit")
            self.sleep(max(0.01, next_slot - now))


def admit(seconds: int, number: int, allowed: int) -> bool:
    """Take one of the ``allowed`` requests of window ``number`` (of ``seconds`` each): one
    guarded UPDATE, atomic on every database; the window's row is created by its first request."""
    windows = RateWindow.objects.filter(seconds=seconds, number=number, used__lt=allowed)
    if windows.update(used=F("used") + 1):
        return True
    try:
        with transaction.atomic():
            RateWindow.objects.create(seconds=seconds, number=number, used=1)
    except IntegrityError:  # it exists: full, or another worker created it a moment ago
        return bool(windows.update(used=F("used") + 1))
    # a new window started: drop the old ones (the previous one may still be in use by a worker
    # whose clock lags a little)
    RateWindow.objects.filter(seconds=seconds, number__lt=number - 1).delete()
    return True
