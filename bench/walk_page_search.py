"""What the walk's run-time page-size search chooses (issue 9, item 3; ``docs/page-size.md``).

The stand-in as a subprocess with a fixed cost per request and a cost per run served
(``--latency-ms``, ``--latency-per-item-ms``: course-discovery serializes about 60 fields a run, with
nested seats), 10,000 runs; the LMS imported from its records. For each per-run cost, a walk
(``sync_catalog --strategy walk``, in a fresh child) at the default tunables (start 100, ceiling
1,600, budget 5 s) and once with the ceiling lifted to 6,400 so that the budget alone decides. Each
row: the sizes the walk used (``walk_sizes``), its pages, requests and wall time, the slowest page
it asked for, and the requests a 100,000-course walk at those sizes would make, at 200 requests an
hour (course-discovery's default user throttle).

No goal here: the figures are what the defaults are chosen from.
"""

from __future__ import annotations

import math

from bench.common import REDIS_DB_INPROC, BenchContext, BenchResult, StandinProcess, flush_redis, setup_django
from bench.lms import (
    bench_env,
    chosen_db,
    clear_overviews,
    drop_pg_database,
    import_records,
    run_child,
    set_config,
)

COURSES = 10_000
QUICK_COURSES = 2_000
LATENCY_MS = 150.0  # the fit of docs/page-size.md's curve: 157.6 ms a request + 2.14 ms a run
PER_ITEM_MS = (0.0, 2.0, 5.0, 10.0)
QUICK_PER_ITEM_MS = (0.0, 5.0)
CEILINGS = (1600, 6400)
BUDGET_S = 5.0
PROJECT_TO = 100_000
QUOTA_PER_HOUR = 200


def run(ctx: BenchContext) -> BenchResult:
    courses = QUICK_COURSES if ctx.quick else COURSES
    costs = QUICK_PER_ITEM_MS if ctx.quick else PER_ITEM_MS
    db = chosen_db()
    flush_redis(REDIS_DB_INPROC)
    env = bench_env(ctx.tmp, db, broker_db=REDIS_DB_INPROC, cache_db=REDIS_DB_INPROC, standin=None)
    rows, samples = [], {}
    try:
        setup_django(env)
        for per_item in costs:
            records = ctx.tmp / f"records-{per_item}.jsonl"
            name = f"standin-{per_item:g}"
            with StandinProcess(
                ctx.tmp,
                courses=courses,
                latency_ms=LATENCY_MS,
                latency_per_item_ms=per_item,
                write_lms_records=records,
                name=name,
            ).start(timeout=180) as standin:
                clear_overviews()
                import_records(records)
                child_env = {
                    **env,
                    "CATALOG_API_URL": standin.api_url,
                    "CATALOG_OAUTH_URL": standin.oauth_url,
                }
                for ceiling in CEILINGS:
                    set_config(walk_page_size_ceiling=ceiling, walk_page_budget=BUDGET_S)
                    report = run_child(
                        ctx.tmp,
                        child_env,
                        "sweep",
                        "--strategy",
                        "walk",
                        label=f"walk-{per_item:g}-{ceiling}",
                        timeout=1800,
                    )
                    run = report.get("sweep_run") or {}
                    sizes = run.get("walk_sizes") or []
                    largest = max((size for size, _ in sizes), default=0)
                    settled = sizes[-1][0] if sizes else 0
                    page_s = (LATENCY_MS + per_item * largest) / 1000
                    projected = _projected_pages(sizes)
                    samples[f"{per_item:g}ms/{ceiling}"] = report
                    rows.append(
                        [
                            f"{per_item:g}",
                            ceiling,
                            ", ".join(f"{size}x{pages}" for size, pages in sizes),
                            run.get("walk_pages"),
                            run.get("catalog_requests"),
                            report.get("wall_s"),
                            f"{page_s:.2f}",
                            settled,
                            projected,
                            f"{projected / QUOTA_PER_HOUR:.2f} h",
                        ]
                    )
    finally:
        flush_redis(REDIS_DB_INPROC)
        if db == "postgres":
            drop_pg_database()
    return BenchResult(
        name="walk_page_search",
        description="the walk's run-time page size at several per-run costs of the catalog",
        inputs={
            "courses": courses,
            "latency_ms": LATENCY_MS,
            "per_item_ms": list(costs),
            "ceilings": list(CEILINGS),
            "budget_s": BUDGET_S,
            "database": db,
        },
        headers=[
            "ms/run",
            "ceiling",
            "sizes used (size x pages)",
            "walk pages",
            "requests",
            "wall s",
            "largest page s (model)",
            "settled at",
            f"walk pages @{PROJECT_TO // 1000}k",
            f"@{QUOTA_PER_HOUR}/h",
        ],
        rows=rows,
        samples=samples,
        notes=[
            "largest page s (model): latency + per-run cost x the largest page asked for.",
            f"walk pages @{PROJECT_TO // 1000}k: the growth as used, then the settled size to the end.",
        ],
    )


def _projected_pages(sizes: list[list[int]]) -> int:
    """Pages a walk of ``PROJECT_TO`` runs needs at these sizes: the growth as used, then the last
    size to the end."""
    covered = pages = 0
    for size, count in sizes[:-1]:
        covered += size * count
        pages += count
    if not sizes:
        return 0
    return pages + math.ceil(max(0, PROJECT_TO - covered) / sizes[-1][0])
