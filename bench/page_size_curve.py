"""The page-size curve: a full sweep at page sizes 20 to 1,000 against the stand-in with a realistic
cost model, and the catalog's throttle modelled from the measured request counts.

Set-up: the stand-in as a subprocess with ``--latency-ms 150 --latency-per-item-ms 2`` (a fixed cost
per request plus a cost per course run returned), 3,200 runs (seed 1); the LMS database (PostgreSQL
when it answers, else SQLite; ``bench/lms.py``) imported from its records with ``import_courses``
and synced once with the latency off (so every measured sweep is a steady-state sweep with nothing
to write, like a scheduled resync). Then for each (page size, ``max_url_length``): a new
``CatalogIntegration`` row with that ``max_url_length`` (as an admin would save it), then
``sync_catalog --no-progress --page-size P`` in a fresh subprocess (``bench/sweep_child.py``). The
stand-in's stats give the list requests and the courses returned by each.

The client splits every chunk's keys so that each URL stays under ``max_url_length`` (~100 keys at
4 KB, ~200 at 8 KB): above that, the page size no longer changes the number of requests.

The throttle (per user, sliding hour: 100/hour until 2024, 200/hour since) is not waited out: the
time to sweep under it is modelled as ``max(measured wall, list requests / quota)`` (token requests
go to the OAuth endpoint, which the API throttle does not count). One scaled-down run checks the
model: the stand-in's throttle at ``THROTTLE_CHECK`` requests per window, the sweep run through it.
"""

from __future__ import annotations

import math
from typing import Any

from bench.common import (
    REDIS_DB_INPROC,
    BenchContext,
    BenchResult,
    StandinProcess,
    flush_redis,
    ratio,
    setup_django,
)
from bench.lms import (
    bench_env,
    chosen_db,
    database_label,
    drop_pg_database,
    import_records,
    run_child,
)

COURSES, QUICK_COURSES = 3200, 500
SEED = 1
FIXED_MS, PER_ITEM_MS = 150.0, 2.0
PAGE_SIZES = (20, 50, 100, 200, 500, 1000)
URL_LENGTHS = (4096, 8192)
# (page size, max_url_length) pairs: every page size at the default 4 KB, the larger ones at 8 KB.
CONFIGS: tuple[tuple[int, int], ...] = tuple((p, 4096) for p in PAGE_SIZES) + tuple(
    (p, 8192) for p in PAGE_SIZES if p >= 100
)
QUOTAS_PER_HOUR = (100, 200)
PROJECT_TO = 100_000  # courses: the sweep the issue builds for
# The scaled-down throttle check: requests per window, window seconds; (page size, max_url_length).
THROTTLE_CHECK = (10, 5.0)
QUICK_THROTTLE_CHECK = (4, 2.0)
THROTTLE_CHECK_CONFIGS = ((100, 4096), (1000, 4096), (200, 8192))


def run(ctx: BenchContext) -> BenchResult:
    courses = QUICK_COURSES if ctx.quick else COURSES
    db = chosen_db()
    flush_redis(REDIS_DB_INPROC)
    records = ctx.tmp / "lms_records.jsonl"
    standin = StandinProcess(
        ctx.tmp,
        courses=courses,
        seed=SEED,
        latency_ms=FIXED_MS,
        latency_per_item_ms=PER_ITEM_MS,
        write_lms_records=records,
    ).start()
    try:
        env = bench_env(ctx.tmp, db, broker_db=REDIS_DB_INPROC, cache_db=REDIS_DB_INPROC, standin=standin)
        setup_django(env)
        imported = import_records(records)
        return _measure(ctx, db, env, standin, courses, imported)
    finally:
        standin.stop()
        flush_redis(REDIS_DB_INPROC)
        if db == "postgres":
            drop_pg_database()


def _set_max_url_length(length: int) -> None:
    from catalog.models import CatalogIntegration

    current = CatalogIntegration.current()
    if current.max_url_length != length:
        CatalogIntegration.objects.create(enabled=True, page_size=current.page_size, max_url_length=length)


def _sweep(ctx: BenchContext, env: dict[str, str], standin: StandinProcess, page_size: int, label: str):
    standin.reset_stats()
    report = run_child(ctx.tmp, env, "sweep", "--page-size", str(page_size), label=label)
    stats = standin.stats()
    items = stats["list_items"]
    report["catalog"] = {
        "requests": stats["requests"],
        "token": stats["token"],
        "list": stats["list"],
        "status_429": stats["status_429"],
        "list_items_total": stats["list_items_total"],
        "items_per_list_request_max": max(items, default=0),
        "items_per_list_request_mean": round(sum(items) / len(items), 1) if items else 0,
    }
    return report


def _counter(report: dict[str, Any], name: str) -> int | None:
    for part in report.get("summary_line", "").split():
        key, _, value = part.partition("=")
        if key == name and value.isdigit():
            return int(value)
    return None


def _hours(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def _measure(
    ctx: BenchContext,
    db: str,
    env: dict[str, str],
    standin: StandinProcess,
    courses: int,
    imported: dict[str, Any],
) -> BenchResult:
    from django.core.cache import cache

    from catalog.throttle import PAUSE_KEY

    overviews = imported["overviews"]
    # Warm-up: everything written once, with the latency off (not measured).
    standin.set_faults(latency_ms=0, latency_per_item_ms=0)
    warm = _sweep(ctx, env, standin, 100, "warmup")
    faults = standin.set_faults(latency_ms=FIXED_MS, latency_per_item_ms=PER_ITEM_MS)

    reports: list[dict[str, Any]] = []
    for page_size, url_length in CONFIGS:
        _set_max_url_length(url_length)
        report = _sweep(ctx, env, standin, page_size, f"p{page_size}-u{url_length}")
        report["page_size"], report["max_url_length"] = page_size, url_length
        reports.append(report)

    # The scaled-down throttle check.
    per_window, window_s = QUICK_THROTTLE_CHECK if ctx.quick else THROTTLE_CHECK
    checks_run = []
    try:
        for page_size, url_length in THROTTLE_CHECK_CONFIGS:
            _set_max_url_length(url_length)
            # A fresh window for each run (setting the throttle clears the stand-in's history) and
            # no fleet pause left over from the previous one.
            standin.set_faults(throttle_per_window=per_window, throttle_window_s=window_s)
            cache.delete(PAUSE_KEY)
            report = _sweep(ctx, env, standin, page_size, f"throttled-p{page_size}-u{url_length}")
            report["page_size"], report["max_url_length"] = page_size, url_length
            checks_run.append(report)
    finally:
        standin.set_faults(throttle_per_window=0)
        cache.delete(PAUSE_KEY)
    _set_max_url_length(4096)

    rows, points = [], []
    scale = PROJECT_TO / overviews
    for r in reports:
        c = r["catalog"]
        wall, lists = r["wall_s"], c["list"]
        per_request_ms = 1000 * wall / lists if lists else None
        points.append((c["items_per_list_request_mean"], per_request_ms))
        row = [
            r["page_size"],
            f"{r['max_url_length'] // 1024} KB",
            _counter(r, "pages"),
            lists,
            f"{c['items_per_list_request_mean']:g} / {c['items_per_list_request_max']}",
            round(wall, 1),
            round(per_request_ms) if per_request_ms else None,
        ]
        for quota in QUOTAS_PER_HOUR:
            row.append(_hours(max(wall, lists / quota * 3600)))
        row.append(math.ceil(lists * scale))
        row.append(_hours(wall * scale))
        for quota in QUOTAS_PER_HOUR:
            row.append(_hours(max(wall * scale, lists * scale / quota * 3600)))
        rows.append(row)
        r["model"] = {
            "per_request_ms": per_request_ms,
            **{f"throttled_{q}_per_hour_s": max(wall, lists / q * 3600) for q in QUOTAS_PER_HOUR},
            "projected_requests_100k": math.ceil(lists * scale),
            "projected_wall_100k_s": round(wall * scale, 1),
        }
    fit_a, fit_b = _fit(points)

    throttle_rows = []
    for r in checks_run:
        c = r["catalog"]
        config = (r["page_size"], r["max_url_length"])
        base = next(x for x in reports if (x["page_size"], x["max_url_length"]) == config)
        modelled = max(base["wall_s"], c["list"] / per_window * window_s)
        throttle_rows.append(
            [
                r["page_size"],
                f"{r['max_url_length'] // 1024} KB",
                c["list"],
                c["status_429"],
                _counter(r, "retries") if r.get("complete") else "-",
                round(base["wall_s"], 1),
                round(modelled, 1),
                round(r["wall_s"], 1),
                ratio(r["wall_s"], modelled),
                "complete" if r.get("complete") else "stopped",
            ]
        )

    by_config = {(r["page_size"], r["max_url_length"]): r for r in reports}
    lists_at = {k: v["catalog"]["list"] for k, v in by_config.items()}
    best = min(reports, key=lambda r: (r["catalog"]["list"], r["wall_s"]))
    summary = {
        "overviews": overviews,
        "fit_ms_per_request": {"fixed_ms": fit_a, "per_course_ms": fit_b},
        "list_requests": {f"{p}@{u}": n for (p, u), n in lists_at.items()},
        "fewest_requests": f"page size {best['page_size']} at {best['max_url_length']}",
        "warmup": {"wall_s": warm["wall_s"], "summary_line": warm.get("summary_line")},
        "faults_after_warmup": {k: faults.get(k) for k in ("latency_ms", "latency_per_item_ms")},
        "throttle_check": {"per_window": per_window, "window_s": window_s},
    }
    large_4k = [lists_at[(p, 4096)] for p in PAGE_SIZES if p >= 100]
    large_8k = [lists_at[(p, 8192)] for p in PAGE_SIZES if p >= 200]
    return BenchResult(
        name=ctx.name,
        description=f"sync_catalog at page sizes {PAGE_SIZES[0]}-{PAGE_SIZES[-1]}, {courses} catalog runs, "
        f"stand-in at {FIXED_MS:g} ms + {PER_ITEM_MS:g} ms per course; throttle modelled",
        inputs={
            "catalog_runs": courses,
            "overviews": overviews,
            "seed": SEED,
            "latency_ms": FIXED_MS,
            "latency_per_item_ms": PER_ITEM_MS,
            "configs": [list(c) for c in CONFIGS],
            "quotas_per_hour": list(QUOTAS_PER_HOUR),
            "projected_to_courses": PROJECT_TO,
            "database": database_label(db),
            "command": "sync_catalog --no-progress --page-size P (child process)",
        },
        headers=[
            "page size",
            "max URL",
            "chunks",
            "list req",
            "courses/req mean / max",
            "wall s",
            "ms/req",
            *(f"sweep @{q}/h" for q in QUOTAS_PER_HOUR),
            "req @100k",
            "wall @100k",
            *(f"@100k {q}/h" for q in QUOTAS_PER_HOUR),
        ],
        rows=rows,
        extra_tables=[
            (
                f"throttle check: the stand-in's throttle at {per_window} requests per {window_s:g} s "
                "(model = max(unthrottled wall, list requests / quota))",
                [
                    "page size",
                    "max URL",
                    "list req",
                    "429s",
                    "retries",
                    "unthrottled s",
                    "model s",
                    "measured s",
                    "measured/model",
                    "status",
                ],
                throttle_rows,
            )
        ],
        samples={"sweeps": reports, "throttle_check": checks_run, "warmup": warm},
        summary=summary,
        checks={
            "every sweep completed (unthrottled)": all(r.get("complete") for r in reports),
            "warm-up sweep completed": bool(warm.get("complete")),
            "measured sweeps wrote nothing (steady state)": all(_counter(r, "updated") == 0 for r in reports),
            "no 429 outside the throttle check": all(r["catalog"]["status_429"] == 0 for r in reports),
            "the sweep used the max_url_length configured": all(
                r.get("config", {}).get("max_url_length") == r["max_url_length"] for r in reports + checks_run
            ),
        },
        notes=[
            f"courses = {overviews} overviews; '@100k' columns scale the measured requests and wall "
            f"linearly to {PROJECT_TO:,} courses (x{scale:.1f}); sweep @q/h = max(wall, list requests / q "
            "per hour)",
            f"least-squares fit over the configs: {fit_a} ms per request + {fit_b} ms per course "
            f"(stand-in model: {FIXED_MS:g} + {PER_ITEM_MS:g}; the rest is the client, the sync and the DB)",
            f"at 4 KB, page sizes 100-1,000 all cost {_span(large_4k)} list requests; at 8 KB, page "
            f"sizes 200-1,000 cost {_span(large_8k)}: the URL length, not the page size, bounds the "
            "courses per request",
            f"database: {database_label(db)}",
            *(
                f"throttle check, page size {r['page_size']} at {r['max_url_length'] // 1024} KB stopped: "
                f"{r.get('error', '')[:300]}"
                for r in checks_run
                if not r.get("complete")
            ),
        ],
    )


def _fit(points: list[tuple[float, float | None]]) -> tuple[float | None, float | None]:
    """Least squares ``ms = a + b * courses`` over (courses per request, ms per request)."""
    pts = [(x, y) for x, y in points if y is not None]
    if len(pts) < 2:
        return None, None
    n = len(pts)
    mx, my = sum(x for x, _ in pts) / n, sum(y for _, y in pts) / n
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    if not sxx:
        return None, None
    b = sum((x - mx) * (y - my) for x, y in pts) / sxx
    return round(my - b * mx, 1), round(b, 2)


def _span(values: list[int]) -> str:
    if not values:
        return "-"
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"
