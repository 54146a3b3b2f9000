"""The publish receiver's cost per publish: SQL queries, Redis cache calls, HTTP calls (must be 0) and
microseconds, for publishes of existing and of new courses.

Measured in this process on a SQLite file (migrated), with the after-commit enqueue going to a real
Redis broker (``redis://127.0.0.1:6379/10``, also the cache); nothing is mocked. Four paths:

- ``receiver``: ``course_published.send`` inside ``transaction.atomic`` and rolled back, so the
  on-commit callback never runs: what the receiver itself costs the publishing request;
- ``publish+commit+enqueue``: ``send`` inside ``transaction.atomic`` that commits; the timing covers
  the commit and the on-commit ``enqueue_refresh`` (``cache.add`` + ``apply_async``);
- the same for a second publish of the same courses while their fetch is still pending (no worker
  runs here, so the marker stays): ``cache.add`` finds it, no broker message;
- ``enqueue_refresh`` alone on keys never seen (``cache.add`` + ``apply_async``, no DB).

The first ``WARMUP`` publishes of each series are run under ``CaptureQueriesContext`` and a cache
call counter (query and call counts come from them) and left out of the timings.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from bench.common import (
    REDIS_DB_INPROC,
    REDIS_URL,
    BenchContext,
    BenchResult,
    counting,
    flush_redis,
    now_ns,
    ratio,
    service_env,
    setup_django,
    summarize,
)

WARMUP = 50
_WRAPPER_SQL = frozenset({"BEGIN", "COMMIT", "ROLLBACK"})
_DATA_VERBS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})
CACHE_METHODS = ("get", "get_many", "add", "set", "set_many", "delete", "has_key", "incr", "touch")


class BenchPublisher:
    """The ``sender`` of the benchmark's publishes."""


def _content(i: int, version: int) -> dict[str, Any]:
    start = dt.datetime(2025, 9, 1, tzinfo=dt.UTC)
    return {
        "display_name": f"Benchmark course {i} v{version}",
        "org": "BenchX",
        "number": f"C{i:05d}",
        "run": "2025",
        "start": start,
        "end": start + dt.timedelta(days=120),
        "self_paced": bool(i % 2),
    }


def run(ctx: BenchContext) -> BenchResult:
    n = 300 if ctx.quick else 2000
    env = service_env(ctx.tmp, broker_db=REDIS_DB_INPROC, cache_db=REDIS_DB_INPROC)
    flush_redis(REDIS_DB_INPROC)
    setup_django(env)
    try:
        return _measure(ctx.name, n)
    finally:
        flush_redis(REDIS_DB_INPROC)


def _measure(ctx_name: str, n: int) -> BenchResult:
    import http.client

    import redis
    import requests
    from django.core.cache.backends.redis import RedisCache
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext
    from opaque_keys.edx.keys import CourseKey

    import celeryconfig
    from catalog.switches import catalog_calls_disabled, fetch_on_create
    from overviews.models import CourseOverview
    from signals import course_published
    from tasks.refresh import enqueue_refresh

    total = WARMUP + n
    existing = [CourseKey.from_string(f"course-v1:BenchX+C{i:05d}+2025") for i in range(total)]
    new = [CourseKey.from_string(f"course-v1:BenchX+N{i:05d}+2025") for i in range(total)]
    CourseOverview.objects.bulk_create(
        [CourseOverview(id=key, **_content(i, 1)) for i, key in enumerate(existing)], batch_size=500
    )
    broker = redis.Redis.from_url(f"{REDIS_URL}/{REDIS_DB_INPROC}")

    def messages() -> int:
        return int(broker.llen(celeryconfig.REFRESH_QUEUE))

    # Every HTTP request anywhere in this process is counted (requests and raw http.client).
    http_calls: dict[str, int] = {}

    queries: dict[str, list[int]] = {}
    data_queries: dict[str, list[int]] = {}
    cache_calls: dict[str, list[int]] = {}
    sql_examples: dict[str, list[str]] = {}
    timings: dict[str, list[float]] = {}

    def series(label: str, keys: list[CourseKey], version: int, *, commit: bool) -> None:
        counts, data_counts, times, cache_counts = [], [], [], []
        for i, key in enumerate(keys):
            content = _content(i, version)
            if i < WARMUP:
                calls: dict[str, int] = {}
                with (
                    counting(RedisCache, CACHE_METHODS, calls),
                    CaptureQueriesContext(connection) as cq,
                    transaction.atomic(),
                ):
                    course_published.send(sender=BenchPublisher, course_key=key, **content)
                    if not commit:
                        transaction.set_rollback(True)
                # The BEGIN and COMMIT/ROLLBACK are the bench's own atomic block, not the receiver's.
                own = [q["sql"] for q in cq.captured_queries if q["sql"] not in _WRAPPER_SQL]
                counts.append(len(own))
                data_counts.append(sum(1 for sql in own if sql.split(None, 1)[0] in _DATA_VERBS))
                cache_counts.append(sum(calls.values()))
                if i == 0:
                    sql_examples[label] = [q["sql"][:160] for q in cq.captured_queries]
                continue
            if commit:
                started = now_ns()
                with transaction.atomic():
                    course_published.send(sender=BenchPublisher, course_key=key, **content)
                times.append((now_ns() - started) / 1000)
            else:
                with transaction.atomic():
                    started = now_ns()
                    course_published.send(sender=BenchPublisher, course_key=key, **content)
                    times.append((now_ns() - started) / 1000)
                    transaction.set_rollback(True)
        queries[label], timings[label], cache_calls[label] = counts, times, cache_counts
        data_queries[label] = data_counts

    msgs: dict[str, int] = {}
    with (
        counting(requests.Session, ("send",), http_calls),
        counting(http.client.HTTPConnection, ("request",), http_calls),
    ):
        series("receiver, existing course", existing, 2, commit=False)
        series("receiver, new course", new, 1, commit=False)
        assert CourseOverview.objects.filter(id__in=new).count() == 0, "rolled-back publishes left rows"
        before = messages()
        series("publish+commit+enqueue, existing course", existing, 3, commit=True)
        msgs["publish+commit+enqueue, existing course"] = messages() - before
        before = messages()
        series("repeat publish, fetch still pending (coalesced)", existing, 4, commit=True)
        msgs["repeat publish, fetch still pending (coalesced)"] = messages() - before
        before = messages()
        series("publish+commit+enqueue, new course", new, 1, commit=True)
        msgs["publish+commit+enqueue, new course"] = messages() - before

        # enqueue_refresh alone: cache.add + apply_async on keys never published.
        label = "enqueue_refresh alone (cache.add + apply_async)"
        before = messages()
        times = []
        for i in range(total):
            key = f"course-v1:BenchX+E{i:05d}+2025"
            if i < WARMUP:
                enqueue_refresh(key)
                continue
            started = now_ns()
            enqueue_refresh(key)
            times.append((now_ns() - started) / 1000)
        timings[label] = times
        msgs[label] = messages() - before
    http_total = sum(http_calls.values())

    rows = []
    summary: dict[str, Any] = {}
    for label, times in timings.items():
        stats = summarize(times, digits=1)
        q, d, c = queries.get(label), data_queries.get(label), cache_calls.get(label)
        rows.append([label, _span(q), _span(d), _span(c), msgs.get(label, 0), stats["median"], stats["p95"]])
        summary[label] = {
            "us": stats,
            "sql_statements_per_publish": _counts(q),
            "sql_data_statements_per_publish": _counts(d),
            "cache_calls_per_publish": _counts(c),
            "broker_messages": msgs.get(label, 0),
        }
    med = {label: summary[label]["us"]["median"] for label in summary}
    ex_alone, new_alone = med["receiver, existing course"], med["receiver, new course"]
    ex_full = med["publish+commit+enqueue, existing course"]
    new_full = med["publish+commit+enqueue, new course"]
    summary["ratios"] = {
        "new/existing, receiver alone": ratio(new_alone, ex_alone),
        "full/receiver alone, existing": ratio(ex_full, ex_alone),
        "full/receiver alone, new": ratio(new_full, new_alone),
        "coalesced repeat/full, existing": ratio(
            med["repeat publish, fetch still pending (coalesced)"], ex_full
        ),
        "enqueue alone share of full, existing": ratio(
            med["enqueue_refresh alone (cache.add + apply_async)"], ex_full
        ),
    }
    summary["http_calls"] = http_total
    summary["switches"] = {
        "disable_catalog_calls": catalog_calls_disabled(),
        "fetch_on_create": fetch_on_create(),
    }

    expected_msgs = {
        "publish+commit+enqueue, existing course": n + WARMUP,
        "repeat publish, fetch still pending (coalesced)": 0,
        "publish+commit+enqueue, new course": n + WARMUP,
        "enqueue_refresh alone (cache.add + apply_async)": n + WARMUP,
    }
    return BenchResult(
        name=ctx_name,
        description="cost of the course_published receiver per publish (SQLite file DB, Redis broker+cache)",
        inputs={
            "publishes_per_series": n,
            "warmup_per_series": WARMUP,
            "broker": f"{REDIS_URL}/{REDIS_DB_INPROC}",
            "cache": f"{REDIS_URL}/{REDIS_DB_INPROC}",
            "database": "SQLite file (temp dir), migrated",
            "coalesce_window_s": celeryconfig.PUBLISH_COALESCE_WINDOW,
            "content_fields_sent": sorted(_content(0, 1)),
        },
        headers=["path", "SQL stmts", "of which data", "cache calls", "broker msgs", "median us", "p95 us"],
        rows=rows,
        samples={
            "us": timings,
            "sql_statements": queries,
            "sql_data_statements": data_queries,
            "cache_calls": cache_calls,
            "sql_first_publish": sql_examples,
            "http_calls_by_method": http_calls,
        },
        summary=summary,
        checks={
            "0 HTTP calls in every path": http_total == 0,
            "one broker message per first publish, none when coalesced": all(
                msgs[label] == want for label, want in expected_msgs.items()
            ),
            "kill switch off and fetch_on_create off (the default paths were measured)": (
                not catalog_calls_disabled() and not fetch_on_create()
            ),
        },
        notes=[
            "microseconds are per publish; 'full' paths include the SQLite COMMIT (fsync) and the "
            "on-commit enqueue to Redis",
            f"ratios: {summary['ratios']}",
            "SQL stmts: the receiver's statements incl. savepoints (the bench's own BEGIN/COMMIT/ROLLBACK "
            "excluded); 'of which data': SELECT/INSERT/UPDATE; counts over the first "
            f"{WARMUP} publishes of each path as min-max (JSON: exact counts; samples.sql_first_publish)",
        ],
    )


def _span(values: list[int] | None) -> str:
    if not values:
        return "-"
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"


def _counts(values: list[int] | None) -> dict[int, int] | None:
    """How many publishes made each number of calls: ``{6: 49, 7: 1}``."""
    if not values:
        return None
    return {v: values.count(v) for v in sorted(set(values))}
