"""Our sweep against the baseline (Open edX's ``sync_course_runs`` algorithm, ``bench/baseline.py``)
at 3,200 / 10,000 / 100,000 catalog runs, stand-in at 0 ms, in the same run.

For each size: the stand-in as a subprocess (``--courses N --write-lms-records F``), the LMS side
imported from its records with ``manage.py import_courses`` (call_command in this process), then,
each in a fresh subprocess (``bench/sweep_child.py``, so that the peak RSS is that process's alone):

- *ours, first*: ``sync_catalog --no-progress`` in-process, the default page size (100, from the
  admin configuration), every row to write;
- *ours, second*: the same again, nothing to write;
- reset of the catalog-owned fields (``UPDATE`` of every row), then the *baseline, first* (the same
  rows to write) and the *baseline, second* (nothing to write).

Catalog requests come from the stand-in's stats (token included), SQL statements from a
``connection.execute_wrapper`` in the child, wall/CPU time from the child around the work alone (not
its interpreter start), peak RSS from the child's ``VmHWM``. A baseline run whose projected time
(its per-run loop cost at the previous size times the runs) exceeds ``BASELINE_FULL_LIMIT_S`` is
timed on every 10th run instead and extrapolated: the walk is always complete, the loop time is
multiplied by 10, and the row says so.
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
    summarize,
)
from bench.lms import (
    bench_env,
    chosen_db,
    clear_overviews,
    database_label,
    drop_pg_database,
    import_records,
    reset_catalog_fields,
    run_child,
)

SIZES = (3200, 10000, 100000)
QUICK_SIZES = (320, 1000, 3200)
PAGE_SIZE = 100  # the admin default; the sweep runs without --page-size
SEED = 1
REQUEST_ALLOWANCE = 3  # requests beyond one per page (the token; a chunk split by the URL limit)
GOAL_SQL_PER_PAGE = 3
GOAL_SPEEDUP = 10
GOAL_RSS_RATIO = 1.3
GOAL_WALL_S = 60
BASELINE_FULL_LIMIT_S = 300  # a baseline run projected longer than this is timed on a 10 % sample
SAMPLE_EVERY = 10


def run(ctx: BenchContext) -> BenchResult:
    sizes = QUICK_SIZES if ctx.quick else SIZES
    reps_small, reps_large = (1, 1) if ctx.quick else (3, 2)
    db = chosen_db()
    flush_redis(REDIS_DB_INPROC)
    env = bench_env(ctx.tmp, db, broker_db=REDIS_DB_INPROC, cache_db=REDIS_DB_INPROC, standin=None)
    try:
        setup_django(env)
        per_size = []
        loop_cost: dict[str, float] = {}  # baseline kind -> seconds per processed run at the last size
        for i, courses in enumerate(sizes):
            reps = reps_large if i == len(sizes) - 1 else reps_small
            per_size.append(_one_size(ctx, env, courses, reps, loop_cost))
        return _result(ctx, db, sizes, per_size)
    finally:
        flush_redis(REDIS_DB_INPROC)
        if db == "postgres":
            drop_pg_database()


def _one_size(
    ctx: BenchContext, env: dict[str, str], courses: int, reps: int, loop_cost: dict[str, float]
) -> dict[str, Any]:
    records = ctx.tmp / f"lms_records_{courses}.jsonl"
    standin = StandinProcess(
        ctx.tmp, courses=courses, seed=SEED, write_lms_records=records, name=f"standin-{courses}"
    ).start()
    child_env = {**env, "CATALOG_API_URL": standin.api_url, "CATALOG_OAUTH_URL": standin.oauth_url}
    try:
        clear_overviews()
        imported = import_records(records)
        overviews = imported["overviews"]

        def measured(mode: str, *args: str, label: str) -> dict[str, Any]:
            standin.reset_stats()
            report = run_child(ctx.tmp, child_env, mode, *args, label=f"{label}-{courses}")
            stats = standin.stats()
            report["catalog"] = {
                "requests": stats["requests"],
                "token": stats["token"],
                "list": stats["list"],
                "list_items_total": stats["list_items_total"],
                "status_429": stats["status_429"],
            }
            return report

        ours: dict[str, list[dict[str, Any]]] = {"first": [], "second": []}
        resets = []
        for rep in range(reps):
            if rep:
                resets.append(reset_catalog_fields())
            ours["first"].append(measured("sweep", label="ours-first"))
            ours["second"].append(measured("sweep", label="ours-second"))
        resets.append(reset_catalog_fields())
        baseline: dict[str, dict[str, Any]] = {}
        for kind in ("first", "second"):
            runs = courses
            projected = loop_cost.get(kind, 0.0) * runs
            sample = SAMPLE_EVERY if projected > BASELINE_FULL_LIMIT_S else 1
            report = measured(
                "baseline",
                "--page-size",
                str(PAGE_SIZE),
                "--sample-every",
                str(sample),
                label=f"baseline-{kind}",
            )
            m = report.get("metrics", {})
            processed = m.get("runs_processed") or 1
            loop_cost[kind] = m.get("loop_s", 0.0) / processed
            report["projected_full_s"] = round(projected, 1)
            # Extrapolated to every run: the walk as measured, the loop times the sample factor.
            report["wall_full_s"] = round(report["wall_s"] + m.get("loop_s", 0.0) * (sample - 1), 2)
            report["sql_full"] = report["sql_total"] * sample
            baseline[kind] = report
        return {
            "courses": courses,
            "overviews": overviews,
            "import": imported,
            "reset_s": resets,
            "ours": ours,
            "baseline": baseline,
            "standin_rss": standin.rss.report() if standin.rss else {},
        }
    finally:
        standin.stop()


def _counter(report: dict[str, Any], name: str) -> int | None:
    for part in report.get("summary_line", "").split():
        key, _, value = part.partition("=")
        if key == name and value.isdigit():
            return int(value)
    return None


def _result(
    ctx: BenchContext, db: str, sizes: tuple[int, ...], per_size: list[dict[str, Any]]
) -> BenchResult:
    rows, compare_rows, summary, checks, samples = [], [], {}, {}, {}
    peak_rss: dict[int, float] = {}
    for size in per_size:
        n, overviews = size["courses"], size["overviews"]
        bound = math.ceil(overviews / PAGE_SIZE) + REQUEST_ALLOWANCE
        s: dict[str, Any] = {"overviews": overviews, "import": size["import"], "requests_bound": bound}
        for kind in ("first", "second"):
            reports = size["ours"][kind]
            walls = [r["wall_s"] for r in reports]
            wall = summarize(walls)
            pages = _counter(reports[0], "pages") or 0
            sql = [r["sql_total"] for r in reports]
            req = [r["catalog"]["requests"] for r in reports]
            rss = max(r["peak_rss_mb"] for r in reports)
            kinds = reports[0]["sql_by_kind"]
            core = sum(v for k, v in kinds.items() if k.endswith(" overview"))
            book = sum(v for k, v in kinds.items() if k.endswith(" sweep"))
            rows.append(
                [
                    f"{n:,}",
                    f"ours, {kind}",
                    len(reports),
                    wall["median"],
                    round(overviews / wall["median"]) if wall["median"] else None,
                    _span(req),
                    bound,
                    _span(sql),
                    round(max(sql) / pages, 2) if pages else None,
                    rss,
                    _counter(reports[0], "updated"),
                    _counter(reports[0], "unchanged"),
                    _counter(reports[0], "missing"),
                ]
            )
            s[f"ours_{kind}"] = {
                "wall_s": wall,
                "cpu_s": summarize([r["cpu_s"] for r in reports]),
                "catalog_requests": req,
                "sql": sql,
                "pages": pages,
                "sql_per_page": round(max(sql) / pages, 2) if pages else None,
                "sql_per_page_overview_table": round(core / pages, 2) if pages else None,
                "sql_per_page_sweep_bookkeeping": round(book / pages, 2) if pages else None,
                "sql_by_kind": kinds,
                "peak_rss_mb": [r["peak_rss_mb"] for r in reports],
                "rss_after_setup_mb": [r["rss_after_setup_mb"] for r in reports],
                "complete": all(r.get("complete") for r in reports),
                "updated": [_counter(r, "updated") for r in reports],
            }
            peak_rss[n] = max(peak_rss.get(n, 0.0), rss)
        for kind in ("first", "second"):
            b = size["baseline"][kind]
            m = b.get("metrics", {})
            sample = b.get("sample_every", 1)
            tag = f"baseline, {kind}" + (f" (1/{sample} sample, extrapolated)" if sample > 1 else "")
            rows.append(
                [
                    f"{n:,}",
                    tag,
                    1,
                    b["wall_full_s"],
                    round(overviews / b["wall_full_s"]) if b["wall_full_s"] else None,
                    b["catalog"]["requests"],
                    "",
                    b["sql_full"],
                    f"{b['sql_full'] / max(1, m.get('runs_fetched', 1)):.2f}/run",
                    b["peak_rss_mb"],
                    m.get("updated", 0) * sample,
                    m.get("unchanged", 0) * sample,
                    m.get("not_found", 0) * sample,
                ]
            )
            s[f"baseline_{kind}"] = {
                "wall_s": b["wall_s"],
                "wall_full_s": b["wall_full_s"],
                "sample_every": sample,
                "projected_full_s": b.get("projected_full_s"),
                "metrics": m,
                "cpu_s": b["cpu_s"],
                "catalog_requests": b["catalog"]["requests"],
                "sql": b["sql_total"],
                "sql_full": b["sql_full"],
                "peak_rss_mb": b["peak_rss_mb"],
                "complete": b.get("complete", False),
                "error": b.get("error"),
            }
        first_speedup = ratio(s["baseline_first"]["wall_full_s"], s["ours_first"]["wall_s"]["median"], 1)
        second_speedup = ratio(s["baseline_second"]["wall_full_s"], s["ours_second"]["wall_s"]["median"], 1)
        s["speedup_first"], s["speedup_second"] = first_speedup, second_speedup
        compare_rows.append(
            [
                f"{n:,}",
                overviews,
                f"{first_speedup}x",
                f"{second_speedup}x",
                f"{s['baseline_first']['sql_full']:,} / {max(s['ours_first']['sql']):,}",
                f"{s['baseline_first']['catalog_requests']} / {max(s['ours_first']['catalog_requests'])}",
                f"{s['baseline_first']['peak_rss_mb']} / {peak_rss[n]}",
                size["import"]["seconds"],
            ]
        )
        summary[str(n)] = s
        samples[str(n)] = {
            "ours": size["ours"],
            "baseline": size["baseline"],
            "standin_rss": size["standin_rss"],
        }
        ours_all = size["ours"]["first"] + size["ours"]["second"]
        checks[f"{n}: every sweep completed"] = all(r.get("complete") for r in ours_all) and all(
            b.get("complete") for b in size["baseline"].values()
        )
        checks[f"{n}: second sweep updated=0"] = (
            all(_counter(r, "updated") == 0 for r in size["ours"]["second"])
            and size["baseline"]["second"].get("metrics", {}).get("updated") == 0
        )
        checks[f"{n}: baseline first sweep wrote rows"] = (
            size["baseline"]["first"].get("metrics", {}).get("updated", 0) > 0
        )

    largest = str(sizes[-1])
    big = summary[largest]
    goals = {}
    for n in sizes:
        s = summary[str(n)]
        bound = s["requests_bound"]
        goals[f"{n:,}: catalog requests <= ceil(N/{PAGE_SIZE})+{REQUEST_ALLOWANCE} = {bound}"] = all(
            r <= bound for kind in ("ours_first", "ours_second") for r in s[kind]["catalog_requests"]
        )
    for kind in ("first", "second"):
        per_page = big[f"ours_{kind}"]["sql_per_page"]
        goals[f"{sizes[-1]:,}, {kind} sweep: <= {GOAL_SQL_PER_PAGE} SQL statements per page ({per_page})"] = (
            per_page is not None and per_page <= GOAL_SQL_PER_PAGE
        )
    for kind in ("first", "second"):
        speedup = big[f"speedup_{kind}"]
        goals[f"{sizes[-1]:,}: >= {GOAL_SPEEDUP}x faster than the baseline, {kind} sweep ({speedup}x)"] = (
            speedup or 0
        ) >= GOAL_SPEEDUP
    rss_ratio = ratio(peak_rss[sizes[-1]], peak_rss[sizes[-2]])
    summary["peak_rss_ratio_largest_to_middle"] = rss_ratio
    goals[
        f"peak RSS at {sizes[-1]:,} <= {GOAL_RSS_RATIO}x that at {sizes[-2]:,} "
        f"({peak_rss[sizes[-1]]} / {peak_rss[sizes[-2]]} MB = {rss_ratio})"
    ] = (rss_ratio or 99) <= GOAL_RSS_RATIO
    big_wall = max(big["ours_first"]["wall_s"]["max"], big["ours_second"]["wall_s"]["max"])
    goals[f"{sizes[-1]:,} courses in under {GOAL_WALL_S} s (slowest sweep: {big_wall} s)"] = (
        big_wall < GOAL_WALL_S
    )

    notes = [
        f"database: {database_label(db)}; cache and fleet throttle state: Redis db {REDIS_DB_INPROC}",
        "courses = overviews in the LMS (catalog runs + CCX + LMS-only, from the stand-in's "
        "--write-lms-records), imported with manage.py import_courses",
        f"SQL per page at {int(largest):,}, first sweep: "
        f"{big['ours_first']['sql_per_page_overview_table']} on the overview table (read the page, "
        f"write it), {big['ours_first']['sql_per_page_sweep_bookkeeping']} of sweep bookkeeping "
        "(SweepChunk finish, SweepRun roll-up and checkpoint, planning); "
        f"statements by kind: {big['ours_first']['sql_by_kind']}",
        f"SQL per page at {int(largest):,}, second sweep: "
        f"{big['ours_second']['sql_per_page_overview_table']} overview table + "
        f"{big['ours_second']['sql_per_page_sweep_bookkeeping']} bookkeeping",
        "baseline SQL is per catalog run: one SELECT (get) and, when a field changed, one UPDATE "
        "(save), each in its own transaction (autocommit), as in the command",
        f"wall = the work alone in the child (median of {len(per_size[-1]['ours']['first'])} at "
        f"{int(largest):,}, of {len(per_size[0]['ours']['first'])} below); the child's interpreter "
        "and Django start add ~0.5 s",
        f"peak RSS = VmHWM of the child process; after django.setup() it is "
        f"{big['ours_first']['rss_after_setup_mb'][0]} MB",
    ]
    for n in sizes:
        for kind in ("first", "second"):
            b = summary[str(n)][f"baseline_{kind}"]
            if b["sample_every"] > 1:
                notes.append(
                    f"baseline {kind} at {n:,}: projected {b['projected_full_s']} s > "
                    f"{BASELINE_FULL_LIMIT_S} s, so timed on every {b['sample_every']}th run "
                    f"(walk {b['metrics']['walk_s']} s complete, loop {b['metrics']['loop_s']} s x "
                    f"{b['sample_every']}): {b['wall_full_s']} s extrapolated"
                )
    return BenchResult(
        name=ctx.name,
        description="our sweep vs the Open edX sync_course_runs algorithm at 3,200 / 10,000 / 100,000 "
        "courses, stand-in at 0 ms",
        inputs={
            "catalog_runs": list(sizes),
            "seed": SEED,
            "page_size": PAGE_SIZE,
            "database": database_label(db),
            "ours": "manage.py sync_catalog --no-progress (call_command in a fresh child process)",
            "baseline": f"bench/baseline.py: CatalogClient.iter_course_runs(page_size={PAGE_SIZE}) walk, "
            "then get/compare/save per run",
            "import": "manage.py import_courses",
            "baseline_full_limit_s": BASELINE_FULL_LIMIT_S,
        },
        headers=[
            "courses",
            "sweep",
            "n",
            "wall s (p50)",
            "courses/s",
            "catalog req",
            "bound",
            "SQL",
            "SQL/page",
            "peak RSS MB",
            "updated",
            "unchanged",
            "missing",
        ],
        rows=rows,
        extra_tables=[
            (
                "ours vs baseline (speed-up = baseline wall / our median wall)",
                [
                    "courses",
                    "overviews",
                    "speed-up first",
                    "speed-up second",
                    "SQL base/ours",
                    "requests base/ours",
                    "peak RSS MB base/ours",
                    "import s",
                ],
                compare_rows,
            )
        ],
        samples=samples,
        summary=summary,
        checks=checks,
        goals=goals,
        notes=notes,
    )


def _span(values: list[int]) -> str:
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"
