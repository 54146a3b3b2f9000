"""A synchronous full sweep, ``manage.py sync_catalog --no-progress --page-size N``, run in this
process with ``call_command`` under ``CaptureQueriesContext``, against the stand-in catalog as a
subprocess that inserts runs between page requests (``--insert-between-pages``).

The LMS side is the stand-in's own ``--write-lms-records`` file (its runs, plus CCX courses and
LMS-only courses), imported with ``import_courses`` first. Each repetition resets the catalog-owned
fields of every overview, then runs a first sweep (everything to write) and a second one (nothing
to write: ``updated=0``). Catalog requests come from the stand-in's stats and are compared with
``ceil(courses / page_size) + 3``.

``make(courses=..., page_size=...)`` builds the benchmark for other sizes (register it in
``bench/run.py``).
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from io import StringIO
from typing import Any

from bench.common import (
    REDIS_DB_INPROC,
    BenchContext,
    BenchResult,
    StandinProcess,
    flush_redis,
    now_ns,
    ratio,
    service_env,
    setup_django,
    summarize,
)

REQUEST_ALLOWANCE = 3  # requests beyond one per page the budget allows (the token, a split chunk)
_COUNTER = re.compile(r"\b(\w+)=([0-9.]+)")


def make(*, courses: int = 3200, page_size: int = 100, insert_between_pages: int = 5, seed: int = 1):
    """A sweep benchmark of ``courses`` catalog runs (the LMS has those plus CCX and LMS-only ones)."""

    def run(ctx: BenchContext) -> BenchResult:
        return _run(
            ctx, courses=courses, page_size=page_size, insert_between_pages=insert_between_pages, seed=seed
        )

    return run


def _run(
    ctx: BenchContext, *, courses: int, page_size: int, insert_between_pages: int, seed: int
) -> BenchResult:
    repeats = 1 if ctx.quick else 3
    flush_redis(REDIS_DB_INPROC)
    records = ctx.tmp / "lms_records.jsonl"
    standin = StandinProcess(
        ctx.tmp,
        courses=courses,
        seed=seed,
        insert_between_pages=insert_between_pages,
        write_lms_records=records,
    ).start()
    try:
        setup_django(
            service_env(ctx.tmp, broker_db=REDIS_DB_INPROC, cache_db=REDIS_DB_INPROC, standin=standin)
        )
        return _measure(
            ctx,
            standin,
            records,
            courses=courses,
            page_size=page_size,
            insert_between_pages=insert_between_pages,
            seed=seed,
            repeats=repeats,
        )
    finally:
        standin.stop()
        flush_redis(REDIS_DB_INPROC)


def _measure(
    ctx: BenchContext,
    standin: StandinProcess,
    records,
    *,
    courses: int,
    page_size: int,
    insert_between_pages: int,
    seed: int,
    repeats: int,
) -> BenchResult:
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from overviews.models import CourseOverview

    out = StringIO()
    started = now_ns()
    call_command("import_courses", str(records), stdout=out)
    import_s = (now_ns() - started) / 1e9
    overviews = CourseOverview.objects.count()
    bound = math.ceil(overviews / page_size) + REQUEST_ALLOWANCE

    def sweep() -> dict[str, Any]:
        standin.reset_stats()
        cpu, standin_cpu = time.process_time(), standin.cpu_seconds()
        out = StringIO()
        with CaptureQueriesContext(connection) as cq:
            t0 = now_ns()
            call_command("sync_catalog", "--no-progress", "--page-size", str(page_size), stdout=out)
            wall = (now_ns() - t0) / 1e9
        stats = standin.stats()
        line = out.getvalue().strip().splitlines()[-1]
        counters = {name: float(v) if "." in v else int(v) for name, v in _COUNTER.findall(line)}
        verbs = Counter(q["sql"].split(None, 1)[0].upper() for q in cq.captured_queries)
        return {
            "wall_s": round(wall, 3),
            "bench_process_cpu_s": round(time.process_time() - cpu, 3),
            "standin_cpu_s": round(standin.cpu_seconds() - standin_cpu, 3),
            "catalog_requests": stats["requests"],
            "requests_by_route": {r: stats[r] for r in ("token", "list", "detail", "other")},
            "list_items_total": stats["list_items_total"],
            "standin_inserted_between_pages": stats["inserted"],
            "sql_queries": len(cq.captured_queries),
            "sql_by_verb": dict(verbs),
            "counters": counters,
            "summary_line": line,
            "complete": line.startswith("sync_catalog complete"),
        }

    first, second = [], []
    for rep in range(repeats):
        if rep:
            CourseOverview.objects.update(
                marketing_url=None,
                eligible_for_financial_aid=True,
                language=None,
                catalog_status="never",
                catalog_synced_at=None,
                catalog_error="",
            )
        first.append(sweep())
        second.append(sweep())

    rows, summary = [], {}
    for label, sweeps in (("first sweep (writes)", first), ("second sweep (no change)", second)):
        walls = [s["wall_s"] for s in sweeps]
        req = [s["catalog_requests"] for s in sweeps]
        sql = [s["sql_queries"] for s in sweeps]
        pages = sweeps[0]["counters"].get("pages", 0)
        c = sweeps[0]["counters"]
        wall = summarize(walls)
        rows.append(
            [
                label,
                len(sweeps),
                wall["median"],
                round(overviews / wall["median"]) if wall["median"] else None,
                _span(req),
                bound,
                _span(sql),
                round(max(sql) / pages, 1) if pages else None,
                c.get("updated"),
                c.get("unchanged"),
                c.get("missing"),
            ]
        )
        summary[label] = {
            "wall_s": wall,
            "catalog_requests": req,
            "requests_bound": bound,
            "sql_queries": sql,
            "sql_per_page": round(max(sql) / pages, 2) if pages else None,
            "pages": pages,
            "updated": [s["counters"].get("updated") for s in sweeps],
            "bench_process_cpu_s": summarize([s["bench_process_cpu_s"] for s in sweeps]),
            "standin_cpu_s": summarize([s["standin_cpu_s"] for s in sweeps]),
        }
    summary["second/first wall ratio"] = ratio(
        summary["second sweep (no change)"]["wall_s"]["median"],
        summary["first sweep (writes)"]["wall_s"]["median"],
    )
    summary["overviews"] = overviews
    summary["import_s"] = round(import_s, 2)
    summary["standin_rss"] = standin.rss.report() if standin.rss else {}
    all_sweeps = first + second
    first_s, second_s = summary["first sweep (writes)"], summary["second sweep (no change)"]
    cpu = {
        "first": first_s["bench_process_cpu_s"]["median"],
        "second": second_s["bench_process_cpu_s"]["median"],
        "standin_first": first_s["standin_cpu_s"]["median"],
        "standin_second": second_s["standin_cpu_s"]["median"],
    }
    return BenchResult(
        name=ctx.name,
        description=f"synchronous sync_catalog of {courses} catalog runs, page size {page_size}, "
        f"{insert_between_pages} runs inserted between pages",
        inputs={
            "catalog_runs": courses,
            "seed": seed,
            "overviews_imported": overviews,
            "page_size": page_size,
            "insert_between_pages": insert_between_pages,
            "repeats": repeats,
            "command": f"sync_catalog --no-progress --page-size {page_size} (call_command, in process)",
            "database": "SQLite file (temp dir)",
            "cache": f"redis db {REDIS_DB_INPROC}",
        },
        headers=[
            "sweep",
            "n",
            "wall s (p50)",
            "courses/s",
            "catalog req",
            "bound",
            "SQL",
            "SQL/page",
            "updated",
            "unchanged",
            "missing",
        ],
        rows=rows,
        samples={"first": first, "second": second},
        summary=summary,
        checks={
            "every sweep completed": all(s["complete"] for s in all_sweeps),
            "second sweep: updated=0": all(s["counters"].get("updated") == 0 for s in second),
            f"catalog requests <= ceil(courses/page_size)+{REQUEST_ALLOWANCE} = {bound}": all(
                s["catalog_requests"] <= bound for s in all_sweeps
            ),
            "one token request per sweep": all(s["requests_by_route"]["token"] == 1 for s in all_sweeps),
        },
        notes=[
            f"courses = overviews in the LMS = {overviews} (catalog runs + CCX + LMS-only); "
            f"bound = ceil({overviews}/{page_size})+{REQUEST_ALLOWANCE} = {bound}",
            "SQL counted with CaptureQueriesContext around call_command (includes the config read and "
            "the count for the progress total); wall time includes the capture's own overhead",
            "first sweep summary line: " + first[0]["summary_line"],
            "second sweep summary line: " + second[0]["summary_line"],
            f"CPU per sweep (median, s): bench process first={cpu['first']} second={cpu['second']}; "
            f"stand-in first={cpu['standin_first']} second={cpu['standin_second']}",
        ],
    )


def _span(values: list[int]) -> str:
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"
