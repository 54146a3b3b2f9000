"""Coalescing per-course catalog fetches, on Django's cache API.

Two markers per course, both with a TTL so a crashed worker never blocks a course for longer:

- ``pending``: a fetch is scheduled and has not started. The first publish sets it (atomic
  ``cache.add``) and schedules the task a coalescing window later; publishes that find it set do
  nothing, since the scheduled fetch comes after them.
- ``running``: a fetch is in progress. A task that finds it set reschedules itself instead of
  fetching concurrently. A task clears ``pending`` only once it holds ``running``, so a publish
  during a fetch sets ``pending`` anew and schedules exactly one more fetch afterwards.

Production uses the Redis cache (``CACHE_URL``), shared by web and workers; on a laptop the
default is Django's database cache, shared by processes through the SQLite file. ``cache.add`` is
atomic in both (SET NX; a primary-key insert).
"""

from __future__ import annotations

import uuid

from django.core.cache import cache

_PREFIX = "catalog_sync:refresh"


def _key(kind: str, course_key: str) -> str:
    return f"{_PREFIX}:{kind}:{course_key}"


def claim_pending(course_key: str, ttl: float) -> bool:
    """True when this caller must schedule the fetch (no fetch was pending for the course)."""
    return bool(cache.add(_key("pending", course_key), 1, timeout=max(1, round(ttl))))


def clear_pending(course_key: str) -> None:
    cache.delete(_key("pending", course_key))


def acquire_running(course_key: str, ttl: float, owner: str | None = None) -> str | None:
    """A token when this caller may fetch now; None while another fetch of the course runs.

    ``owner`` (the task id) lets a redelivered message take over the lock its own earlier
    execution held when its worker died: that fetch is not running any more, it is this one.
    """
    token = owner or uuid.uuid4().hex
    name = _key("running", course_key)
    if cache.add(name, token, timeout=max(1, round(ttl))):
        return token
    if owner is not None and cache.get(name) == owner:
        cache.set(name, token, timeout=max(1, round(ttl)))
        return token
    return None


def release_running(course_key: str, token: str) -> None:
    """Release the lock if it is still ours (it may have expired and been taken meanwhile)."""
    name = _key("running", course_key)
    if cache.get(name) == token:
        cache.delete(name)
