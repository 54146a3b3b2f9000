"""The two sweep strategies (issue 9): keys-batched and walk + repair, chosen per sweep by estimate
(``sync_catalog --strategy auto``), each figure side by side with Open edX's algorithm
(``bench/baseline.py``) in the same run. Every sweep runs in a fresh child (``bench/sweep_child.py``),
against the stand-in catalog as a subprocess; the LMS is imported from the stand-in's
``--write-lms-records`` file.

a. **Throttled, drifting**: 10,000 catalog runs, the stand-in's per-user throttle at 5 requests a
   second (429 with ``Retry-After`` beyond: ``throttle_per_window=5``, ``throttle_window_s=1``), runs
   inserted and deleted at the front of the list between pages (``DRIFT``). Each sweep from
   never-synced overviews: auto, keys forced, and the baseline (its walk waits out each 429:
   ``paced``), then the same three with ``rate_limit_per_second=5`` in a new ``CatalogIntegration``
   row (the fleet cap). After each, every overview is checked against the stand-in's final state
   (``GET /_standin/runs``): *every overview right* is the goal, its wall the figure.
b. **A catalog 30x the LMS**: 96,000 catalog runs, the LMS importing every 30th of its records
   (about 3,300 overviews): requests used by auto and by the baseline (whose per-run loop is timed
   on a sample; its walk is complete).
c. **A catalog the size of the LMS, drifting**: 3,200 runs (3,289 overviews), ``DRIFT``: requests
   used by auto, against ``ceil(3,200 / page size) + 3``, and every overview right.
d. **100,000 courses** on SQLite and on PostgreSQL (each in its own process, ``scale`` below, on
   one stand-in): auto (a walk) first and second sweep against the baseline's (sampled 1 run in
   10 and extrapolated, as ``sweep_scale`` does), SQL statements per page.
e. **The floor** of the second (no-change) sweep: the same requests -- the count probe, the list
   pages of its ``walk_sizes``, the ``keys=`` repair of the keys it asked for (the stand-in's
   ``keys_requested``) -- fetched and decoded with ``CatalogClient`` and no database at all, in
   the same run.
f. **Under 200 requests an hour** (course-discovery's default user throttle): each strategy's
   requests at 100,000 (measured, or the sweep's own estimate) times 18 s.

``--quick``: 1,000 / 320 of 9,600 / 320 / 3,000 courses, SQLite only for (d).

Its own PostgreSQL database (``catalog_bench_strategies``) and Redis database (13: the cache, so the
cached ``CatalogIntegration``, the fleet pause and rate windows): a benchmark running at the same
time on ``catalog_bench`` and Redis db 10 can neither drop its database nor lend it a configuration.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    PYTHON,
    BenchContext,
    BenchResult,
    StandinProcess,
    flush_redis,
    ratio,
    setup_django,
)
from bench.lms import (  # noqa: E402
    bench_env,
    chosen_db,
    clear_overviews,
    database_label,
    drop_pg_database,
    import_records,
    postgres_answers,
    reset_catalog_fields,
    run_child,
    set_config,
)

SEED = 1
PAGE_SIZE = 100  # the admin default: every sweep runs without --page-size
DRIFT = {"insert_between_pages": 3, "delete_between_pages": 5}
THROTTLE = {"throttle_per_window": 5, "throttle_window_s": 1.0}
FLEET_CAP = 5.0
# (full, quick)
THROTTLED_COURSES = (10_000, 1_000)
WIDE_CATALOG, WIDE_EVERY = (96_000, 9_600), 30
SAME_SIZE = (3_200, 320)
SCALE = (100_000, 3_000)
BASELINE_SAMPLE = (10, 1)  # the baseline's per-run loop at 96,000 / 100,000: every 10th run
QUOTA_PER_HOUR = 200
GOAL_THROTTLED_S = 12.0
EXPECT_KEYS_THROTTLED_S = 29.0
GOAL_WIDE_REQUESTS = 60
REQUEST_ALLOWANCE = 3
GOAL_SPEEDUP = 10.0
GOAL_SQL_PER_PAGE = 3.0
GOAL_FLOOR_RATIO = 1.5
SCALE_TIMEOUT = 1500
# Its own PostgreSQL database and Redis database (cache: the cached CatalogIntegration, the fleet
# pause and rate windows): another benchmark running at the same time (catalog_bench, Redis db 10)
# must neither drop its database nor lend it its configuration.
PG_NAME = "catalog_bench_strategies"
REDIS_DB = 13


def _pick(pair: tuple[Any, Any], quick: bool) -> Any:
    return pair[1] if quick else pair[0]


# --- the parent: (a), (b), (c) here, (d)-(e) in one process per database -------------------------


def run(ctx: BenchContext) -> BenchResult:
    q = ctx.quick
    dbs = ["sqlite"] if q else (["sqlite", "postgres"] if postgres_answers() else ["sqlite"])
    scale = _scale_all(ctx, dbs)  # first: each recreates its own database
    db = chosen_db()
    flush_redis(REDIS_DB)
    env = bench_env(ctx.tmp, db, broker_db=REDIS_DB, cache_db=REDIS_DB, standin=None, pg_name=PG_NAME)
    try:
        setup_django(env)
        throttled = _throttled(ctx, env, _pick(THROTTLED_COURSES, q))
        wide = _wide(ctx, env, _pick(WIDE_CATALOG, q))
        same = _same_size(ctx, env, _pick(SAME_SIZE, q))
    finally:
        flush_redis(REDIS_DB)
        if db == "postgres":
            drop_pg_database(PG_NAME)
    return _result(ctx, db, throttled, wide, same, scale)


def _standin(ctx: BenchContext, courses: int, name: str, **faults: Any) -> tuple[StandinProcess, Path]:
    records = ctx.tmp / f"lms_records_{name}.jsonl"
    standin = StandinProcess(
        ctx.tmp, courses=courses, seed=SEED, write_lms_records=records, name=name, **faults
    ).start(timeout=180)
    return standin, records


def _child_env(env: dict[str, str], standin: StandinProcess) -> dict[str, str]:
    return {**env, "CATALOG_API_URL": standin.api_url, "CATALOG_OAUTH_URL": standin.oauth_url}


def _measure(
    ctx: BenchContext,
    env: dict[str, str],
    standin: StandinProcess,
    mode: str,
    *args: str,
    label: str,
    check: bool = True,
    restore: bool = False,
    keep_keys: bool = False,
    timeout: float = 900,
) -> dict[str, Any]:
    """One child sweep: the stand-in's stats around it, and (``check``) every overview against the
    stand-in's state after it; ``restore``: then the catalog back as it was before (the runs the
    drift deleted put back, the ones it inserted deleted), so that the next sweep meets the same data."""
    before = standin.runs() if check else None
    standin.reset_stats()
    report = run_child(ctx.tmp, _child_env(env, standin), mode, *args, label=label, timeout=timeout)
    stats = standin.stats()
    report["catalog"] = {
        "requests": stats["requests"],
        "token": stats["token"],
        "api": stats["list"] + stats["detail"],
        "list": stats["list"],
        "detail": stats["detail"],
        "status_429": stats["status_429"],
        "status_404": stats["status_404"],
        "list_items_total": stats["list_items_total"],
        "inserted": stats["inserted"],
        "deleted": stats["deleted"],
    }
    if check:
        after = standin.runs()
        report["right"] = overviews_right(before, after, stats["deleted_keys"], ours=mode == "sweep")
        if restore:
            was = {r["key"]: r for r in before}
            back = [was[k] for k in stats["deleted_keys"] if k in was]
            extra = [r["key"] for r in after if r["key"] not in was]
            report["restored"] = standin.control("POST", "runs", {"upsert": back, "delete": extra})
    report["keys_requested_distinct"] = len(stats["keys_requested"])
    if keep_keys:  # the keys this sweep asked for with keys=, in the order first asked
        report["keys_requested"] = list(stats["keys_requested"])
    report["label"] = label
    return report


def overviews_right(
    before: list[dict[str, Any]], after: list[dict[str, Any]], deleted: list[str], *, ours: bool
) -> dict[str, Any]:
    """Every LMS overview against the catalog's state after the sweep (the idea of ``scripts/soak.py``).

    - a course (a CCX: its master) the catalog lists: its three catalog fields are the mapped run's,
      and (``ours``) its status is ``ok``;
    - one the catalog deleted during the sweep: right if it holds the run as it was before, or
      (``ours``) is ``missing``;
    - one the catalog never had: (``ours``) ``missing``; the baseline writes nothing there.
    """
    from catalog.mapping import map_course_run
    from catalog.sync import catalog_key_for
    from overviews.models import CATALOG_FIELDS, CourseOverview

    final = {r["key"]: r for r in after}
    earlier = {r["key"]: r for r in before}
    gone = set(deleted)
    right = 0
    kinds = {"listed": 0, "deleted_mid_sweep": 0, "not_in_catalog": 0}
    wrong: list[str] = []
    rows = CourseOverview.objects.values_list("id", *CATALOG_FIELDS, "catalog_status")
    total = 0
    for key, *values, status in rows.iterator(chunk_size=5000):
        total += 1
        key = str(key)
        master = catalog_key_for(key)
        got = dict(zip(CATALOG_FIELDS, values, strict=True))
        if master in final:
            kinds["listed"] += 1
            ok = got == map_course_run(final[master]) and (not ours or status == "ok")
        elif master in gone and master in earlier:
            kinds["deleted_mid_sweep"] += 1
            ok = got == map_course_run(earlier[master]) or (ours and status == "missing")
        else:
            kinds["not_in_catalog"] += 1
            ok = not ours or status == "missing"
        if ok:
            right += 1
        elif len(wrong) < 5:
            wrong.append(f"{key}: {got} status={status}")
    return {
        "right": right,
        "overviews": total,
        "all": right == total,
        "kinds": kinds,
        "wrong_examples": wrong,
    }


def _sweep_args(strategy: str) -> tuple[str, ...]:
    return ("sweep", "--strategy", strategy)


def _throttled(ctx: BenchContext, env: dict[str, str], courses: int) -> dict[str, Any]:
    """(a): auto, keys forced and the baseline, at 5 requests/s, drifting; then under the fleet cap."""
    from django.core.cache import cache

    from catalog.throttle import PAUSE_KEY

    standin, records = _standin(ctx, courses, f"throttled-{courses}")
    try:
        clear_overviews()
        imported = import_records(records)
        runs: list[dict[str, Any]] = []
        for cap in (0.0, FLEET_CAP):
            set_config(rate_limit_per_second=cap)
            for side, mode, args in (
                ("ours, auto", "sweep", ("--strategy", "auto")),
                ("ours, keys forced", "sweep", ("--strategy", "keys")),
                ("baseline", "baseline", ("--page-size", str(PAGE_SIZE), "--paced")),
            ):
                reset_catalog_fields()
                cache.delete(PAUSE_KEY)
                standin.set_faults(**DRIFT, **THROTTLE)  # setting the throttle starts a fresh window
                tag = f"{side}, fleet cap {cap:g}/s" if cap else side
                report = _measure(ctx, env, standin, mode, *args, label=f"a-{len(runs)}", restore=True)
                report.update(side=side, fleet_cap=cap, tag=tag)
                runs.append(report)
        standin.set_faults(throttle_per_window=0, insert_between_pages=0, delete_between_pages=0)
        set_config(rate_limit_per_second=0.0)
        cache.delete(PAUSE_KEY)
        return {"courses": courses, "import": imported, "runs": runs}
    finally:
        standin.stop()


def _wide(ctx: BenchContext, env: dict[str, str], catalog: int) -> dict[str, Any]:
    """(b): the LMS holds every WIDE_EVERY-th record of a catalog 30x its size."""
    standin, records = _standin(ctx, catalog, f"wide-{catalog}")
    try:
        lines = [line for line in records.read_text(encoding="utf-8").splitlines() if line.strip()]
        subset = ctx.tmp / f"lms_records_wide_subset_{catalog}.jsonl"
        subset.write_text("\n".join(lines[::WIDE_EVERY]) + "\n", encoding="utf-8")
        clear_overviews()
        imported = import_records(subset)
        ours = _measure(ctx, env, standin, *_sweep_args("auto"), label="b-auto")
        sample = _pick(BASELINE_SAMPLE, ctx.quick)
        base = _measure(
            ctx,
            env,
            standin,
            "baseline",
            "--page-size",
            str(PAGE_SIZE),
            "--sample-every",
            str(sample),
            label="b-baseline",
            check=sample == 1,
        )
        _extrapolate(base, sample)
        return {
            "catalog_runs": catalog,
            "lms_records": len(lines[::WIDE_EVERY]),
            "import": imported,
            "ours": ours,
            "baseline": base,
        }
    finally:
        standin.stop()


def _same_size(ctx: BenchContext, env: dict[str, str], courses: int) -> dict[str, Any]:
    """(c): catalog and LMS of one size, drifting between pages."""
    standin, records = _standin(ctx, courses, f"same-{courses}", **DRIFT)
    try:
        clear_overviews()
        imported = import_records(records)
        ours = _measure(ctx, env, standin, *_sweep_args("auto"), label="c-auto")
        second = _measure(ctx, env, standin, *_sweep_args("auto"), label="c-auto-second")
        reset_catalog_fields()
        base = _measure(
            ctx, env, standin, "baseline", "--page-size", str(PAGE_SIZE), "--paced", label="c-base"
        )
        return {"courses": courses, "import": imported, "ours": ours, "second": second, "baseline": base}
    finally:
        standin.stop()


def _extrapolate(report: dict[str, Any], sample: int) -> None:
    """A sampled baseline's wall extrapolated to every run (the walk is complete; loop x sample)."""
    m = report.get("metrics", {})
    report["sample_every"] = sample
    report["wall_full_s"] = round(report.get("wall_s", 0.0) + m.get("loop_s", 0.0) * (sample - 1), 2)
    report["sql_full"] = report.get("sql_total", 0) * sample


# --- (d), (e): 100,000 courses on one database, in its own process --------------------------------


def _scale_all(ctx: BenchContext, dbs: list[str]) -> dict[str, Any]:
    """One stand-in of SCALE runs; each database's sweeps in a process of its own (Django sets up one
    database per process)."""
    courses = _pick(SCALE, ctx.quick)
    standin, records = _standin(ctx, courses, f"scale-{courses}")
    out: dict[str, Any] = {"courses": courses}
    try:
        for i, db in enumerate(dbs):
            tmp = ctx.tmp / f"scale-{db}"
            tmp.mkdir(exist_ok=True)
            result = tmp / "scale.json"
            cmd = [
                PYTHON,
                str(Path(__file__).resolve()),
                "scale",
                "--db",
                db,
                "--standin-url",
                standin.base_url,
                "--records",
                str(records),
                "--tmp",
                str(tmp),
                "--out",
                str(result),
            ]
            cmd += ["--quick"] if ctx.quick else []
            cmd += ["--keys-too"] if i == 0 else []
            log = tmp / "scale.log"
            with open(log, "w") as log_file:
                proc = subprocess.run(
                    cmd,
                    cwd=ROOT,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    timeout=SCALE_TIMEOUT,
                    check=False,
                    env={**os.environ, "BENCH_DB": db},
                )
            if result.exists():
                out[db] = json.loads(result.read_text())
            else:
                out[db] = {"error": f"exit {proc.returncode}: {log.read_text()[-3000:]}"}
    finally:
        standin.stop()
    return out


def _scale(args: argparse.Namespace) -> dict[str, Any]:
    """(d) and (e) on ``args.db``: ours first/second (auto), keys forced second (``--keys-too``), the
    floor of our second sweep, the baseline first/second."""
    tmp = Path(args.tmp)
    ctx = BenchContext(name="sweep_strategies-scale", quick=args.quick, tmp=tmp)
    standin = StandinProcess(tmp, courses=0, name="attached")  # the parent's stand-in: control routes only
    standin.base_url = args.standin_url
    flush_redis(REDIS_DB)
    env = bench_env(tmp, args.db, broker_db=REDIS_DB, cache_db=REDIS_DB, standin=None, pg_name=PG_NAME)
    try:
        setup_django(env)
        imported = import_records(Path(args.records), method="bulk_create")
        out: dict[str, Any] = {
            "db": args.db,
            "database": database_label(args.db, PG_NAME),
            "import": imported,
        }
        out["ours_first"] = _measure(ctx, env, standin, *_sweep_args("auto"), label="d-first", check=False)
        out["ours_second"] = _measure(
            ctx, env, standin, *_sweep_args("auto"), label="d-second", check=False, keep_keys=True
        )
        if args.keys_too:
            out["keys_second"] = _measure(
                ctx, env, standin, *_sweep_args("keys"), label="d-keys", check=False
            )
        out["floor"] = _floor(ctx, env, standin, out["ours_second"])
        reset_catalog_fields()
        sample = _pick(BASELINE_SAMPLE, args.quick)
        for kind in ("first", "second"):
            base = _measure(
                ctx,
                env,
                standin,
                "baseline",
                "--page-size",
                str(PAGE_SIZE),
                "--sample-every",
                str(sample),
                label=f"d-base-{kind}",
                check=False,
            )
            _extrapolate(base, sample)
            out[f"baseline_{kind}"] = base
        return out
    finally:
        flush_redis(REDIS_DB)
        if args.db == "postgres":
            drop_pg_database(PG_NAME)


def _floor(
    ctx: BenchContext, env: dict[str, str], standin: StandinProcess, second: dict[str, Any]
) -> dict[str, Any]:
    """(e): the same requests as ``second`` made, fetched and decoded with no database: its count
    probe, its walk's pages (``walk_sizes``) and the keys its repair asked for (the stand-in's
    ``keys_requested``)."""
    run = second.get("sweep_run", {})
    sizes = run.get("walk_sizes") or []
    if run.get("strategy") != "walk" or not sizes:
        return {"error": f"the second sweep did not walk (strategy {run.get('strategy')!r})"}
    repair = second.get("keys_requested") or []
    listed = {r["key"] for r in standin.runs()}
    lacking = sum(k not in listed for k in repair)
    keys_file = ctx.tmp / "floor-repair-keys.txt"
    keys_file.write_text("\n".join(repair) + "\n", encoding="utf-8")
    args = ["--sizes", json.dumps(sizes), "--probe", "--repair-keys", str(keys_file)]
    standin.reset_stats()
    report = run_child(ctx.tmp, _child_env(env, standin), "floor", *args, label="e-floor")
    stats = standin.stats()
    report["catalog"] = {"requests": stats["requests"], "list": stats["list"], "token": stats["token"]}
    report["repair_keys_not_in_catalog"] = lacking
    return report


# --- the result -------------------------------------------------------------------------------------


def _run_fields(report: dict[str, Any]) -> dict[str, Any]:
    return report.get("sweep_run", {}) or {}


def _sizes(report: dict[str, Any]) -> str:
    sizes = _run_fields(report).get("walk_sizes") or []
    return " ".join(f"{s}x{n}" for s, n in sizes) or "-"


def _wall(report: dict[str, Any]) -> float:
    return report.get("wall_full_s", report.get("wall_s", math.nan))


def _right(report: dict[str, Any]) -> str:
    r = report.get("right")
    if not r:
        return "-"
    return f"{r['right']:,}/{r['overviews']:,}" + (" ALL" if r["all"] else "")


def _row(scenario: str, side: str, report: dict[str, Any], note: str = "") -> list[Any]:
    run = _run_fields(report)
    c = report.get("catalog", {})
    est = (
        f"{run.get('estimate_keys')}/{run.get('estimate_walk')}"
        if run.get("estimate_keys") is not None or run.get("estimate_walk") is not None
        else "-"
    )
    status = "ok" if report.get("complete") else f"FAILED {str(report.get('error', ''))[:60]}"
    return [
        scenario,
        side,
        run.get("strategy") or ("-" if report.get("mode") == "sweep" else "baseline"),
        round(_wall(report), 2),
        c.get("requests"),
        c.get("api"),
        c.get("status_429"),
        run.get("catalog_requests", "-"),
        run.get("catalog_count", "-"),
        est,
        _sizes(report),
        report.get("sql_per_page") or "-",
        _right(report),
        status + (f"; {note}" if note else ""),
    ]


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def _result(
    ctx: BenchContext,
    db: str,
    throttled: dict[str, Any],
    wide: dict[str, Any],
    same: dict[str, Any],
    scale: dict[str, Any],
) -> BenchResult:
    rows: list[list[Any]] = []
    checks: dict[str, bool] = {}
    goals: dict[str, bool] = {}
    notes: list[str] = []
    summary: dict[str, Any] = {}

    # (a)
    n_a = throttled["courses"]
    a = {}
    for r in throttled["runs"]:
        rows.append(_row(f"a. {n_a:,} at 5/s, drift", r["tag"], r))
        a[r["tag"]] = r
        checks[f"a: {r['tag']} completed"] = bool(r.get("complete"))
    for cap_tag in ("", f", fleet cap {FLEET_CAP:g}/s"):
        auto, keys, base = (
            a.get(f"{s}{cap_tag}", {}) for s in ("ours, auto", "ours, keys forced", "baseline")
        )
        right_auto = bool(auto.get("right", {}).get("all"))
        checks[f"a{cap_tag}: ours (auto) left every overview right"] = right_auto
        checks[f"a{cap_tag}: ours (keys forced) left every overview right"] = bool(
            keys.get("right", {}).get("all")
        )
        goals[f"a{cap_tag}: auto, every overview right in <= {GOAL_THROTTLED_S:g} s ({_wall(auto)} s)"] = (
            right_auto and _wall(auto) <= GOAL_THROTTLED_S
        )
        notes.append(
            f"a{cap_tag}: keys forced {_wall(keys)} s"
            + ("" if ctx.quick else f" (expected >= {EXPECT_KEYS_THROTTLED_S:g} at 10,000)")
            + ", baseline "
            f"{_wall(base)} s with {base.get('right', {}).get('right')} of "
            f"{base.get('right', {}).get('overviews')} overviews right"
        )
    summary["a_throttled"] = {
        tag: {
            "wall_s": _wall(r),
            "catalog": r.get("catalog"),
            "right": r.get("right"),
            "sweep_run": r.get("sweep_run"),
            "metrics": r.get("metrics"),
        }
        for tag, r in a.items()
    }

    # (b)
    ours_b, base_b = wide["ours"], wide["baseline"]
    rows.append(_row(f"b. {wide['catalog_runs']:,} catalog, LMS 1/{WIDE_EVERY}", "ours, auto", ours_b))
    sample_note = (
        f"loop on 1/{base_b['sample_every']}, extrapolated" if base_b.get("sample_every", 1) > 1 else ""
    )
    rows.append(
        _row(f"b. {wide['catalog_runs']:,} catalog, LMS 1/{WIDE_EVERY}", "baseline", base_b, sample_note)
    )
    req_b = ours_b["catalog"]["requests"]
    goals[
        f"b: auto uses <= {GOAL_WIDE_REQUESTS} requests ({req_b}; baseline {base_b['catalog']['requests']})"
    ] = req_b <= GOAL_WIDE_REQUESTS
    checks["b: ours completed, every overview right"] = bool(ours_b.get("complete")) and bool(
        ours_b.get("right", {}).get("all")
    )
    summary["b_wide"] = {
        "catalog_runs": wide["catalog_runs"],
        "overviews": wide["import"]["overviews"],
        "ours": {"requests": req_b, "wall_s": ours_b["wall_s"], "sweep_run": ours_b.get("sweep_run")},
        "baseline": {"requests": base_b["catalog"]["requests"], "wall_full_s": base_b.get("wall_full_s")},
    }

    # (c)
    n_c = same["courses"]
    bound_c = math.ceil(n_c / PAGE_SIZE) + REQUEST_ALLOWANCE
    bound_c_overviews = math.ceil(same["import"]["overviews"] / PAGE_SIZE) + REQUEST_ALLOWANCE
    rows.append(_row(f"c. {n_c:,}, drift", "ours, auto", same["ours"]))
    rows.append(_row(f"c. {n_c:,}, drift", "ours, auto, second", same["second"]))
    rows.append(_row(f"c. {n_c:,}, drift", "baseline", same["baseline"]))
    req_c = same["ours"]["catalog"]["requests"]
    goals[f"c: auto uses <= ceil({n_c:,}/{PAGE_SIZE})+{REQUEST_ALLOWANCE} = {bound_c} requests ({req_c})"] = (
        req_c <= bound_c
    )
    checks["c: ours completed, every overview right"] = bool(same["ours"].get("complete")) and bool(
        same["ours"].get("right", {}).get("all")
    )
    summary["c_same_size"] = {
        "courses": n_c,
        "overviews": same["import"]["overviews"],
        "bound": bound_c,
        "bound_on_overviews": bound_c_overviews,
        "ours": {
            "requests": req_c,
            "wall_s": same["ours"]["wall_s"],
            "sweep_run": same["ours"].get("sweep_run"),
        },
        "second": {"requests": same["second"]["catalog"]["requests"]},
        "baseline": {
            "requests": same["baseline"]["catalog"]["requests"],
            "right": same["baseline"].get("right"),
        },
    }

    # (d), (e), (f)
    n_d = scale["courses"]
    project_rows: list[list[Any]] = []
    summary["d_scale"] = {}
    for name in ("sqlite", "postgres"):
        s = scale.get(name)
        if s is None:
            continue
        if "error" in s and "ours_first" not in s:
            checks[f"d: {name} scale run completed"] = False
            notes.append(f"d ({name}): {s['error'][-500:]}")
            continue
        label = f"d. {n_d:,} {name}"
        for key, side in (
            ("ours_first", "ours, auto, first"),
            ("ours_second", "ours, auto, second"),
            ("keys_second", "ours, keys forced, second"),
        ):
            if key in s:
                rows.append(_row(label, side, s[key]))
                checks[f"d: {name} {side} completed"] = bool(s[key].get("complete"))
        for kind in ("first", "second"):
            b = s[f"baseline_{kind}"]
            note = f"loop on 1/{b['sample_every']}, extrapolated" if b.get("sample_every", 1) > 1 else ""
            rows.append(_row(label, f"baseline, {kind}", b, note))
        floor = s.get("floor", {})
        rows.append(
            [
                label,
                "floor (no database)",
                "-",
                floor.get("wall_s"),
                floor.get("catalog", {}).get("requests"),
                floor.get("catalog", {}).get("list"),
                "-",
                "-",
                floor.get("catalog_count", "-"),
                "-",
                " ".join(f"{a}x{b}" for a, b in floor.get("sizes", [])) or "-",
                "-",
                "-",
                f"probe {floor.get('probe_s')} + walk {floor.get('walk_s')} "
                f"+ repair {floor.get('repair_s')} s"
                if "wall_s" in floor
                else str(floor.get("error", ""))[:80],
            ]
        )
        first, second = s["ours_first"], s["ours_second"]
        speed_first = ratio(_wall(s["baseline_first"]), first["wall_s"], 1)
        speed_second = ratio(_wall(s["baseline_second"]), second["wall_s"], 1)
        floor_ratio = ratio(second["wall_s"], floor["wall_s"]) if floor.get("wall_s") else None
        goals[f"d ({name}): first sweep >= {GOAL_SPEEDUP:g}x faster than the baseline ({speed_first}x)"] = (
            speed_first or 0
        ) >= GOAL_SPEEDUP
        goals[f"d ({name}): second sweep >= {GOAL_SPEEDUP:g}x faster than the baseline ({speed_second}x)"] = (
            speed_second or 0
        ) >= GOAL_SPEEDUP
        for key in ("ours_first", "ours_second"):
            per_page = s[key].get("sql_per_page")
            goals[
                f"d ({name}): {key.replace('_', ' ')} <= {GOAL_SQL_PER_PAGE:g} SQL statements "
                f"per page ({per_page})"
            ] = per_page is not None and per_page <= GOAL_SQL_PER_PAGE
        goals[f"e ({name}): second sweep <= {GOAL_FLOOR_RATIO}x the floor ({floor_ratio}x)"] = (
            floor_ratio is not None and floor_ratio <= GOAL_FLOOR_RATIO
        )
        checks[f"d ({name}): second sweep updated nothing"] = (
            _run_fields(second).get("courses_updated") or 0
        ) == 0 and bool(second.get("complete"))
        summary["d_scale"][name] = {
            "database": s.get("database"),
            "import": s.get("import"),
            "speedup_first": speed_first,
            "speedup_second": speed_second,
            "floor_ratio": floor_ratio,
            "floor": {
                k: floor.get(k) for k in ("wall_s", "probe_s", "walk_s", "repair_s", "pages", "repair_keys")
            },
            **{
                k: {
                    "wall_s": _wall(s[k]),
                    "requests": s[k].get("catalog", {}).get("requests"),
                    "sql_total": s[k].get("sql_full", s[k].get("sql_total")),
                    "sql_per_page": s[k].get("sql_per_page"),
                    "sql_by_kind": s[k].get("sql_by_kind"),
                    "sweep_run": s[k].get("sweep_run"),
                    "metrics": s[k].get("metrics"),
                }
                for k in ("ours_first", "ours_second", "keys_second", "baseline_first", "baseline_second")
                if k in s
            },
        }
        for key in ("ours_first", "ours_second"):
            run = _run_fields(s[key])
            notes.append(
                f"d ({name}), {key.replace('_', ' ')}: {s[key].get('sql_total')} statements over "
                f"{run.get('walk_pages')} walk pages + {run.get('chunks_done')} repair chunks: "
                f"{s[key].get('sql_by_kind')}"
            )
        if not project_rows:
            project_rows = _projection(n_d, s)
    summary["f_projection"] = project_rows

    notes += [
        f"database of a-c: {database_label(db, PG_NAME)}; d on each of: "
        + ", ".join(scale[k].get("database", k) for k in ("sqlite", "postgres") if k in scale),
        f"drift (a, c): {DRIFT} -- deletes come first at the front of the list, so a walk skips "
        f"{DRIFT['delete_between_pages'] - DRIFT['insert_between_pages']} runs per page net (equal numbers "
        "cancel in the shift); a keys-batched sweep meets only the inserts (after each keys= request)",
        "requests = every request the stand-in answered (OAuth token, 429s included); API = list + detail; "
        "run req = SweepRun.catalog_requests; est k/w = SweepRun.estimate_keys / estimate_walk",
        "wall = the work alone in the child process (its interpreter and Django start excluded); a "
        "baseline sampled 1 run in N is its complete walk plus its loop times N",
        "right = overviews whose three catalog fields match the stand-in's state after the sweep "
        "(and, for ours, catalog_status ok, or missing when the catalog does not list the course); the "
        "baseline never syncs CCX courses (the catalog does not know their keys) and does not repair skips",
    ]
    return BenchResult(
        name=ctx.name,
        description="sweep strategies (keys-batched, walk + repair, auto) against Open edX's algorithm: "
        "throttled and drifting, a wide catalog, 100,000 courses, the floor, 200/hour",
        inputs={
            "seed": SEED,
            "page_size": PAGE_SIZE,
            "drift": DRIFT,
            "throttle": THROTTLE,
            "fleet_cap_per_second": FLEET_CAP,
            "throttled_courses": n_a,
            "wide_catalog_runs": wide["catalog_runs"],
            "wide_every": WIDE_EVERY,
            "same_size_courses": n_c,
            "scale_courses": n_d,
            "scale_databases": [k for k in ("sqlite", "postgres") if k in scale],
            "baseline_sample": _pick(BASELINE_SAMPLE, ctx.quick),
            "quota_per_hour": QUOTA_PER_HOUR,
        },
        headers=[
            "scenario",
            "side",
            "strategy",
            "wall s",
            "requests",
            "API",
            "429s",
            "run req",
            "count",
            "est k/w",
            "walk sizes",
            "SQL/page",
            "right",
            "status",
        ],
        rows=rows,
        extra_tables=[
            (
                f"f. a {n_d:,}-course sweep at {QUOTA_PER_HOUR} requests/hour (API requests; the OAuth "
                "token is not throttled)",
                ["strategy", "API requests", "from", f"@{QUOTA_PER_HOUR}/h"],
                project_rows,
            )
        ],
        samples={"throttled": throttled, "wide": wide, "same_size": same, "scale": scale},
        summary=summary,
        checks=checks,
        goals=goals,
        notes=notes,
    )


def _projection(courses: int, s: dict[str, Any]) -> list[list[Any]]:
    """(f) from the first database's measured requests and the sweeps' own estimates."""
    rows = []
    first = s["ours_first"]
    run = _run_fields(first)
    api = first.get("catalog", {}).get("api")
    rows.append([f"ours, auto ({run.get('strategy')}), first sweep", api, "measured", _at_quota(api)])
    if run.get("estimate_walk") is not None:
        rows.append(
            ["walk + repair", run["estimate_walk"], "SweepRun.estimate_walk", _at_quota(run["estimate_walk"])]
        )
    if run.get("estimate_keys") is not None:
        rows.append(
            ["keys-batched", run["estimate_keys"], "SweepRun.estimate_keys", _at_quota(run["estimate_keys"])]
        )
    if "keys_second" in s:
        k_api = s["keys_second"].get("catalog", {}).get("api")
        rows.append(["keys-batched (forced, second sweep)", k_api, "measured", _at_quota(k_api)])
    b_api = s["baseline_first"].get("catalog", {}).get("api")
    rows.append([f"Open edX (page size {PAGE_SIZE})", b_api, "measured", _at_quota(b_api)])
    del courses
    return rows


def _at_quota(requests: int | None) -> str:
    if not requests:
        return "-"
    return _hours(requests / QUOTA_PER_HOUR * 3600)


# --- the scale child's entry point ------------------------------------------------------------------


def _main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/sweep_strategies.py")
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("scale", help="(d) and (e) on one database; run by the benchmark")
    s.add_argument("--db", choices=("sqlite", "postgres"), required=True)
    s.add_argument("--standin-url", required=True)
    s.add_argument("--records", required=True)
    s.add_argument("--tmp", required=True)
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--quick", action="store_true")
    s.add_argument("--keys-too", action="store_true")
    args = p.parse_args(argv)
    out = _scale(args)
    args.out.write_text(json.dumps(out, indent=1, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
