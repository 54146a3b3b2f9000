"""The fanned-out sweep on 1, 2 and 4 real Celery worker processes, stand-in at 50 ms per request.

Set-up: the stand-in catalog as a subprocess (3,200 runs, ``--latency-ms 50``); the LMS database
(PostgreSQL when it answers, else a SQLite file; see ``bench/lms.py``) imported from the stand-in's
LMS records with ``import_courses``; Redis as broker (db 11) and cache (db 12). Workers are separate
processes, ``celery -A tasks worker -P prefork -c 1`` each (N of them for N workers), because that
is how a fleet is scaled (one process, or one pod, per worker), each with its own broker connection
and a prefetch of one message. One more row runs a single worker with ``-c 2`` for comparison.

Each repetition resets the catalog-owned fields, then:
1. ``manage.py sync_catalog --async --page-size 50`` (call_command here: it enqueues the
   ``catalog_sync.sweep`` coordinator and returns);
2. polls the newest ``SweepRun`` row every ``POLL_S`` until it is no longer running: the wall time
   is from just before the enqueue to the poll that saw it complete (a *first* sweep: every row
   to write);
3. does the same again with nothing to write (a *second* sweep).

Per-worker chunk counts and chunk-task run times come from the workers' logs (Celery's "succeeded
in" lines).
"""

from __future__ import annotations

import re
from collections import Counter
from io import StringIO
from typing import Any

from bench.common import (
    REDIS_DB_BROKER,
    REDIS_DB_CACHE,
    BenchContext,
    BenchResult,
    StandinProcess,
    Worker,
    flush_redis,
    now_ns,
    ratio,
    setup_django,
    summarize,
    wait_until,
)
from bench.lms import (
    bench_env,
    chosen_db,
    database_label,
    drop_pg_database,
    import_records,
    reset_catalog_fields,
)

COURSES, QUICK_COURSES = 3200, 1000
PAGE_SIZE = 50
LATENCY_MS = 50
SEED = 1
POLL_S = 0.02
SWEEP_TIMEOUT_S = 300
GOAL_TWO_WORKERS = 1.7
# (label, worker processes, concurrency of each)
CONFIGS: tuple[tuple[str, int, int], ...] = (
    ("1 worker", 1, 1),
    ("2 workers", 2, 1),
    ("4 workers", 4, 1),
    ("1 worker, -c 2", 1, 2),
)
_CHUNK_DONE = re.compile(r"catalog_sync\.sweep_chunk\[[^\]]+\] succeeded in ([0-9.eE+-]+)s")


def run(ctx: BenchContext) -> BenchResult:
    courses = QUICK_COURSES if ctx.quick else COURSES
    reps = 1 if ctx.quick else 3
    db = chosen_db()
    flush_redis(REDIS_DB_BROKER, REDIS_DB_CACHE)
    records = ctx.tmp / "lms_records.jsonl"
    standin = StandinProcess(
        ctx.tmp, courses=courses, seed=SEED, latency_ms=LATENCY_MS, write_lms_records=records
    ).start()
    try:
        env = bench_env(ctx.tmp, db, broker_db=REDIS_DB_BROKER, cache_db=REDIS_DB_CACHE, standin=standin)
        setup_django(env)
        imported = import_records(records)
        per_config = []
        for label, processes, concurrency in CONFIGS:
            per_config.append(_one_config(ctx, env, standin, label, processes, concurrency, reps))
        return _result(ctx, db, courses, imported, per_config, standin)
    finally:
        standin.stop()
        flush_redis(REDIS_DB_BROKER, REDIS_DB_CACHE)
        if db == "postgres":
            drop_pg_database()


def _sweep(standin: StandinProcess) -> dict[str, Any]:
    from django.core.management import call_command

    from catalog.models import SweepRun, SweepStatus

    before = SweepRun.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    standin.reset_stats()
    out = StringIO()
    t0 = now_ns()
    call_command("sync_catalog", "--async", "--page-size", str(PAGE_SIZE), stdout=out)
    enqueued = (now_ns() - t0) / 1e9

    def finished() -> SweepRun | None:
        run = SweepRun.objects.filter(pk__gt=before).order_by("-pk").first()
        return run if run is not None and run.status != SweepStatus.RUNNING else None

    run = wait_until(finished, SWEEP_TIMEOUT_S, interval=POLL_S, what="the SweepRun to complete")
    wall = (now_ns() - t0) / 1e9
    stats = standin.stats()
    return {
        "wall_s": round(wall, 3),
        "enqueue_s": round(enqueued, 4),
        "run_started_to_finished_s": round((run.finished_at - run.started_at).total_seconds(), 3),
        "status": run.status,
        "chunks": run.chunks_total,
        "chunks_failed": run.chunks_failed,
        "seen": run.courses_seen,
        "updated": run.courses_updated,
        "unchanged": run.courses_unchanged,
        "missing": run.courses_missing,
        "retries": run.retries,
        "throttled": run.throttled,
        "catalog_requests": stats["requests"],
        "catalog_tokens": stats["token"],
        "catalog_list": stats["list"],
    }


def _chunk_times(worker: Worker) -> list[float]:
    return [float(t) for t in _CHUNK_DONE.findall(worker.log())]


def _one_config(
    ctx: BenchContext,
    env: dict[str, str],
    standin: StandinProcess,
    label: str,
    processes: int,
    concurrency: int,
    reps: int,
) -> dict[str, Any]:
    slug = label.replace(" ", "").replace(",", "").replace("-", "")
    workers = [Worker(ctx.tmp, env, concurrency=concurrency, name=f"{slug}-{i}") for i in range(processes)]
    sweeps: dict[str, list[dict[str, Any]]] = {"first": [], "second": []}
    rss: list[dict[str, float]] = []
    try:
        for worker in workers:
            worker.start()
        for _rep in range(reps):
            reset_catalog_fields()
            for kind in ("first", "second"):
                done_before = [len(_chunk_times(w)) for w in workers]
                result = _sweep(standin)
                # The last chunk's log line can trail the SweepRun update by a few ms.
                wanted = sum(done_before) + result["chunks"]
                wait_until(
                    lambda wanted=wanted: sum(len(_chunk_times(w)) for w in workers) >= wanted,
                    10,
                    interval=0.05,
                    what="the workers' log lines",
                )
                result["chunks_by_worker"] = [
                    len(_chunk_times(w)) - before for w, before in zip(workers, done_before, strict=True)
                ]
                sweeps[kind].append(result)
        chunk_times = [t for w in workers for t in _chunk_times(w)]
    finally:
        for worker in workers:
            rss.append(worker.stop())
    return {
        "label": label,
        "processes": processes,
        "concurrency": concurrency,
        "sweeps": sweeps,
        "chunk_task_s": summarize(chunk_times),
        "worker_rss": rss,
    }


def _result(
    ctx: BenchContext,
    db: str,
    courses: int,
    imported: dict[str, Any],
    per_config: list[dict[str, Any]],
    standin: StandinProcess,
) -> BenchResult:
    rows, summary = [], {}
    medians: dict[tuple[str, str], float] = {}
    for config in per_config:
        for kind in ("first", "second"):
            sweeps = config["sweeps"][kind]
            wall = summarize([s["wall_s"] for s in sweeps])
            medians[(config["label"], kind)] = wall["median"]
            by_worker = Counter()
            for s in sweeps:
                for i, n in enumerate(s["chunks_by_worker"]):
                    by_worker[i] += n
            rows.append(
                [
                    config["label"],
                    f"{kind} ({'writes' if kind == 'first' else 'no change'})",
                    len(sweeps),
                    wall["median"],
                    f"{wall['min']}-{wall['max']}",
                    None,  # speed-up, filled below
                    round(imported["overviews"] / wall["median"]) if wall["median"] else None,
                    sweeps[0]["chunks"],
                    "/".join(str(by_worker[i] // len(sweeps)) for i in range(config["processes"])),
                    _span([s["catalog_requests"] for s in sweeps]),
                    _span([s["catalog_tokens"] for s in sweeps]),
                    sweeps[0]["updated"],
                ]
            )
            summary[f"{config['label']} / {kind}"] = {
                "wall_s": wall,
                "run_started_to_finished_s": summarize([s["run_started_to_finished_s"] for s in sweeps]),
                "enqueue_s": summarize([s["enqueue_s"] for s in sweeps]),
                "statuses": [s["status"] for s in sweeps],
                "updated": [s["updated"] for s in sweeps],
            }
        summary[f"{config['label']} / chunk task s"] = config["chunk_task_s"]
        summary[f"{config['label']} / worker rss"] = config["worker_rss"]
    for row in rows:
        kind = "first" if row[1].startswith("first") else "second"
        row[5] = f"{ratio(medians[('1 worker', kind)], row[3])}x"
    speedups = {
        (label, kind): ratio(medians[("1 worker", kind)], medians[(label, kind)]) for (label, kind) in medians
    }
    summary["speedup_vs_1_worker"] = {f"{label} / {kind}": v for (label, kind), v in speedups.items()}
    all_sweeps = [s for c in per_config for k in ("first", "second") for s in c["sweeps"][k]]
    two_first, two_second = speedups[("2 workers", "first")], speedups[("2 workers", "second")]
    chunk_p50 = {c["label"]: c["chunk_task_s"].get("median") for c in per_config}
    return BenchResult(
        name=ctx.name,
        description=f"sync_catalog --async on 1/2/4 Celery worker processes, {courses} catalog runs, "
        f"page size {PAGE_SIZE}, stand-in at {LATENCY_MS} ms",
        inputs={
            "catalog_runs": courses,
            "overviews": imported["overviews"],
            "page_size": PAGE_SIZE,
            "standin_latency_ms": LATENCY_MS,
            "workers": "N x `celery -A tasks worker -P prefork -c 1` (plus one row: 1 x -c 2)",
            "database": database_label(db),
            "broker": f"redis db {REDIS_DB_BROKER}",
            "cache": f"redis db {REDIS_DB_CACHE}",
            "repeats": len(per_config[0]["sweeps"]["first"]),
            "import": imported,
        },
        headers=[
            "workers",
            "sweep",
            "n",
            "wall s (p50)",
            "min-max s",
            "speed-up",
            "courses/s",
            "chunks",
            "chunks per worker",
            "catalog req",
            "tokens",
            "updated",
        ],
        rows=rows,
        samples={c["label"]: c["sweeps"] for c in per_config},
        summary=summary,
        checks={
            "every sweep completed": all(s["status"] == "complete" for s in all_sweeps),
            "second sweeps: updated=0": all(
                s["updated"] == 0 for c in per_config for s in c["sweeps"]["second"]
            ),
            "no chunk failed": all(s["chunks_failed"] == 0 for s in all_sweeps),
        },
        goals={
            f"2 workers >= {GOAL_TWO_WORKERS}x faster than 1, first sweep ({two_first}x)": (two_first or 0)
            >= GOAL_TWO_WORKERS,
            f"2 workers >= {GOAL_TWO_WORKERS}x faster than 1, second sweep ({two_second}x)": (two_second or 0)
            >= GOAL_TWO_WORKERS,
        },
        notes=[
            "wall = from just before `sync_catalog --async` (enqueue) to the poll that saw the SweepRun "
            f"complete (polled every {POLL_S * 1000:.0f} ms); speed-up = 1 worker's median / this median",
            f"chunk task run time p50 (s, from the workers' logs): {chunk_p50}",
            f"database: {database_label(db)}",
            f"stand-in peak RSS: {standin.rss.report() if standin.rss else {}}",
            "worker RSS (tree, single largest process) per config: "
            + "; ".join(
                f"{c['label']}: "
                + ", ".join(f"{r.get('peak_tree_mb')}/{r.get('peak_single_process_mb')} MB" for r in rss)
                for c in per_config
                for rss in [c["worker_rss"]]
            ),
        ],
    )


def _span(values: list[int]) -> str:
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"
