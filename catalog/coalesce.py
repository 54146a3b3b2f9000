"""Coalescing per-course catalog fetches, and the database outbox that makes them dependable.

The record: ``CourseOverview.catalog_refresh_requested_at`` (the outbox marker). A publish sets
it in the same UPDATE that writes the content; an ops refresh request sets it in one UPDATE for
its keys. The per-course task clears it when its fetch completes (written, missing, permanent
error, or retries given up), guarded by ``WHERE catalog_refresh_requested_at <= <fetch start>``
so that a request made during the fetch keeps its marker. The beat task
``catalog_sync.requeue_refreshes`` queues a fetch for every marker older than the coalescing
window plus one requeue interval. So a fetch whose message never reached the broker (the broker
down at publish time) or was lost there still happens: nothing depends on the cache below.

The hints, in Django's cache (Redis in production, ``CACHE_URL``; Django's database cache on a
laptop), two per course, both with a TTL so a crashed worker never blocks a course for longer:

- ``pending``: a fetch is scheduled and has not started. The first request sets it (``add``) and
  schedules the task; requests that find it set do nothing, since the scheduled fetch comes after
  them. A task waiting out a retry sets it again, so requests coalesce into the retry too.
- ``running``: a fetch is in progress. A task that finds it set reschedules itself instead of
  fetching concurrently. A task clears ``pending`` only once it holds ``running``, so a request
  during a fetch sets ``pending`` anew and schedules exactly one more fetch afterwards.

Atomicity, and what a lost, expired or raced value costs (none decides an outcome):

=========================  ====================  ==========================  =====================
operation                  Redis                 database cache              when lost / raced
=========================  ====================  ==========================  =====================
claim ``pending`` (add)    ``SET NX``: atomic    INSERT on a unique key:     one extra fetch; a
                                                 atomic; on an *expired*     lost message is
                                                 row, SELECT then UPDATE:    requeued from the
                                                 two claimers may both win   outbox marker
acquire ``running`` (add)  ``SET NX``: atomic    as above                    two concurrent
                                                                             fetches; the guarded
                                                                             write keeps the
                                                                             fresher answer
take over ``running``      Lua compare-and-set   get, compare, set (not      as above
(same task id)             (atomic)              atomic)
release ``running``        Lua compare-and-      get, compare, delete (not   as above
                           delete (atomic)       atomic)
=========================  ====================  ==========================  =====================

The database cache's non-atomic paths are accepted: the lock's TTL (the task's hard time limit
plus 5 s) outlives the task, so the window between "compare" and "write" opens only when a lock
expires at that very moment, and the worst outcome is one extra fetch, never a wrong row.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

from django.core.cache import cache
from django.db.models import Q
from opaque_keys.edx.keys import CourseKey

from overviews.models import CourseOverview

_PREFIX = "catalog_sync:refresh"
# The outbox marker's column (``overviews.models.CourseOverview``).
OUTBOX_FIELD = "catalog_refresh_requested_at"


def _key(kind: str, course_key: str) -> str:
    return f"{_PREFIX}:{kind}:{course_key}"


def _ttl(seconds: float) -> int:
    return max(1, round(seconds))


# --- The hints (cache) ------------------------------------------------------------------------


def claim_pending(course_key: str, ttl: float) -> bool:
    """True when this caller must schedule the fetch (no fetch was pending for the course)."""
    return bool(cache.add(_key("pending", course_key), 1, timeout=_ttl(ttl)))


def hold_pending(course_key: str, ttl: float) -> None:
    """Mark a fetch as scheduled whoever scheduled it (a task waiting out a retry)."""
    cache.set(_key("pending", course_key), 1, timeout=_ttl(ttl))


def clear_pending(course_key: str) -> None:
    cache.delete(_key("pending", course_key))


def running(course_keys: Iterable[str]) -> set[str]:
    """Those of these courses whose fetch is in progress (one cache round trip)."""
    names = {_key("running", key): key for key in course_keys}
    return {names[name] for name in cache.get_many(list(names))}


def acquire_running(course_key: str, ttl: float, owner: str | None = None) -> str | None:
    """A token when this caller may fetch now; None while another fetch of the course runs.

    ``owner`` (the task id) lets a redelivered message take over the lock its own earlier
    execution held when its worker died: that fetch is not running any more, it is this one.
    """
    token = owner or uuid.uuid4().hex
    name = _key("running", course_key)
    if cache.add(name, token, timeout=_ttl(ttl)):
        return token
    if owner is not None and _compare_and_set(name, owner, token, _ttl(ttl)):
        return token
    return None


def release_running(course_key: str, token: str) -> None:
    """Release the lock if it is still ours (it may have expired and been taken meanwhile)."""
    _compare_and_set(_key("running", course_key), token, None, 0)


# KEYS[1] the lock; ARGV[1] the expected (serialized) value; ARGV[2] the new one, or "" to delete;
# ARGV[3] the TTL in seconds. Returns 1 when the value matched.
_COMPARE_AND_SET = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('del', KEYS[1]) else redis.call('set', KEYS[1], ARGV[2], 'EX', ARGV[3]) end
return 1
"""


def _compare_and_set(name: str, expected: str, new: str | None, ttl: int) -> bool:
    """Set (or delete, ``new=None``) the value at ``name`` only if it is ``expected``: one Lua
    script on Redis (atomic); get, compare, write on other backends (see the module docstring)."""
    backend = getattr(cache, "_cache", None)
    serializer = getattr(backend, "_serializer", None)
    if serializer is not None and hasattr(backend, "get_client"):  # django's RedisCache
        key = cache.make_and_validate_key(name)
        client = backend.get_client(key, write=True)
        new_value = b"" if new is None else serializer.dumps(new)
        return bool(client.eval(_COMPARE_AND_SET, 1, key, serializer.dumps(expected), new_value, ttl))
    if cache.get(name) != expected:
        return False
    if new is None:
        cache.delete(name)
    else:
        cache.set(name, new, timeout=ttl)
    return True


# --- The record (database outbox) -------------------------------------------------------------


def mark_requested(keys: Sequence[CourseKey], at: datetime) -> int:
    """Record that these courses are owed a fetch (one UPDATE). Returns the rows marked."""
    if not keys:
        return 0
    return CourseOverview.objects.filter(id__in=list(keys)).update(**{OUTBOX_FIELD: at})


def clear_requested(keys: Sequence[CourseKey | str], not_after: datetime) -> int:
    """The fetch that started at ``not_after`` completed: clear these courses' markers (one
    UPDATE), except where a request made after that moment set one again (the guard is in the
    UPDATE's own WHERE, so it holds against a concurrent publish)."""
    if not keys:
        return 0
    return CourseOverview.objects.filter(id__in=list(keys), **{f"{OUTBOX_FIELD}__lte": not_after}).update(
        **{OUTBOX_FIELD: None}
    )


def due_requests(older_than: datetime, *, batch: int, limit: int) -> Iterator[list[str]]:
    """Keys (stored strings) of courses whose marker was set at or before ``older_than``, oldest
    first, ``batch`` per query and ``limit`` in all: keyset pagination over (marker, id), so a
    marker cleared or set meanwhile never makes a page skip or repeat a row."""
    marker, key = None, None
    left = limit
    while left > 0:
        rows = CourseOverview.objects.filter(**{f"{OUTBOX_FIELD}__lte": older_than})
        if marker is not None:
            rows = rows.filter(
                Q(**{f"{OUTBOX_FIELD}__gt": marker}) | Q(**{OUTBOX_FIELD: marker, "id__gt": key})
            )
        page = list(rows.order_by(OUTBOX_FIELD, "id").values_list(OUTBOX_FIELD, "id")[: min(batch, left)])
        if not page:
            return
        marker, key = page[-1]
        left -= len(page)
        yield [str(course_key) for _, course_key in page]
        if len(page) < batch:
            return
